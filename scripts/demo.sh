#!/usr/bin/env bash
# make demo: the original system on one machine. A server on
# 127.0.0.1:5000 and the original's two sensors (temperature every 2 s,
# humidity every 3 s), then log.txt as it grows. Ctrl-C stops everything.
set -u
cd "$(dirname "$0")/.."
dir=${DEMO_DIR:-demo}
mkdir -p "$dir"
bin=build
pids=()

stop() {
    trap - INT TERM EXIT
    echo
    echo "stopping..."
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    wait 2>/dev/null
    echo "data kept in $dir/ (log.txt, sensornet.db)"
    exit 0
}
trap stop INT TERM EXIT

"$bin/sensornet-server" --listen 127.0.0.1:5000 --log "$dir/log.txt" \
    --db "$dir/sensornet.db" 2>>"$dir/server.err" &
pids+=($!)
# Wait for the listener (the server logs this line once it is bound).
for _ in $(seq 100); do
    grep -q "Servidor iniciando" "$dir/log.txt" 2>/dev/null && break
    if ! kill -0 "${pids[0]}" 2>/dev/null; then
        echo "server failed to start:" >&2
        cat "$dir/server.err" >&2
        exit 1
    fi
    sleep 0.1
done
"$bin/sensornet-client" --kind temperature --quiet --spool "$dir/spool" >>"$dir/client1.log" 2>&1 &
pids+=($!)
"$bin/sensornet-client" --kind humidity --quiet --spool "$dir/spool" >>"$dir/client2.log" 2>&1 &
pids+=($!)
echo "sensornet demo: server on 127.0.0.1:5000, Sensor1 and Sensor2 sending."
echo "Dashboard: http://127.0.0.1:8080/"
echo "Showing $dir/log.txt; Ctrl-C stops."
tail -n 5 -f "$dir/log.txt" &
pids+=($!)
wait
