#!/usr/bin/env bash
# deploy/bootstrap.sh: install sensornet on one Debian 12 host and start it.
#
# Every UserData of deploy/aws/*.yaml runs this script, and
# tests/integ/test_deploy_testbed.py runs it on the test hosts. It gets the
# source (a `make dist` tarball, a git clone, or the tree it sits in),
# installs the build packages (scripts/deps.sh), builds, runs
# `make install PREFIX=...`, writes the configuration and the systemd units
# (deploy/systemd/), starts the role's service and waits until it works:
# the server answers PING with PONG, the sensor has had a reading
# acknowledged. Then, if asked, it signals CloudFormation.
#
# Without systemd as PID 1 (containers, the test hosts) it starts the same
# binaries with the same arguments in the background, with pid files.
#
#   deploy/bootstrap.sh --role server [OPTIONS]
#   deploy/bootstrap.sh --role client --server 10.0.1.10:5000 --kind humidity
#   deploy/bootstrap.sh --stop --root DIR        stop what --no-systemd started
#   deploy/bootstrap.sh --refresh-pgpass         re-read the database secret
#
# Tokens (--token-secret ARN or --token-secret-file FILE): a sensor's token
# is the hex HMAC-SHA256 of its id under the master secret. The server
# writes the tokens file (sha256: entries) for --token-sensor ids; a client
# computes the token of its own id(s). TLS (--tls auto): the server makes a
# private CA and a certificate for its addresses on the first run (kept on
# later runs) and can publish the CA certificate to an SSM parameter; a
# client takes the CA from that parameter or a file and verifies the server.
#
# Running it again is safe: the same artifact is not unpacked twice, make
# rebuilds nothing, the files are rewritten and the service restarted.
# SPDX-License-Identifier: MIT
set -euo pipefail

prog=bootstrap
say() { printf '%s: %s\n' "$prog" "$*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
    cat >&2 <<'EOF'
Usage: bootstrap.sh --role server|client [OPTION]...
       bootstrap.sh --stop [--root DIR]
       bootstrap.sh --refresh-pgpass [--root DIR]

Source (default: the source tree this script is in):
  --artifact PATH|URL    a `make dist` tarball
  --git URL              clone URL (with --ref, default main: a branch or tag)
  --ref REF
  --source-dir DIR       an unpacked source tree
Install:
  --prefix DIR           make install PREFIX (default /usr/local)
  --work-dir DIR         where a tarball or clone is unpacked and built
                         (default PREFIX/src/sensornet)
  --no-deps              do not install Debian packages (scripts/deps.sh)
  --user NAME            service user, created if missing (default sensornet;
                         the client unit uses DynamicUser= under systemd)
Services:
  --systemd | --no-systemd   default: systemd when it is PID 1
  --root DIR             --no-systemd only: etc/, var/ and run/ under DIR
                         instead of / (tests, several roles on one host)
  --ready-timeout SEC    how long to wait for the service to work (default
                         120 for the server, 1200 for a client)
Server:
  --listen ADDR          sensor port (default 0.0.0.0:5000)
  --http-port N          dashboard port when the server has --http (default
                         8080; 0: off)
  --postgres CONNINFO    store in PostgreSQL (default: SQLite in the state dir)
  --pg-secret ARN        or: build the conninfo from this Secrets Manager
  --pg-host HOST         secret ({"username","password"}), a passfile and
  --pg-port N            these (port 5432, database sensornet); the timer
  --pg-db NAME           sensornet-pgpass.timer re-reads it (rotation)
  --pg-sslmode MODE      libpq sslmode (default require: RDS has TLS)
  --server-opt KEY=VALUE one more configuration file line (repeatable)
  --token-sensor ID[,N]  with tokens: let in sensor ID (with N: the ids
                         ID-1 .. ID-N, as sensornet-client --sensors N names
                         them); repeatable
  --tls-san NAME         --tls auto: one more DNS name or IP address in the
                         server certificate (repeatable; its addresses and
                         host name are always in)
  --tls-publish-ssm NAME --tls auto: put the CA certificate (public) in this
                         SSM parameter
Client:
  --server HOST:PORT     collector (default 10.0.1.10:5000)
  --kind KIND            temperature or humidity (default temperature)
  --sensors N            simulated sensors in one process (default 1)
  --name NAME            instance name (default: KIND, or "load" if N > 1)
  --client-arg ARG       one more sensornet-client argument (repeatable)
  --tls-ca-ssm NAME      --tls auto: wait (bounded) until this SSM parameter
                         holds the CA certificate, then trust it
  --tls-ca-file FILE     --tls auto: trust this CA certificate (no AWS)
                         (neither: the system's CA store)
  --tls-server-name NAME the name to check in the server certificate
Tokens and TLS (both roles; an empty value means off):
  --token-secret ARN     master secret of the tokens, from Secrets Manager
  --token-secret-file F  the same from a file (no AWS)
  --tls off|auto         server: generate a CA and a certificate (first run)
                         and speak only TLS; client: connect with TLS
                         (default off)
AWS:
  --region REGION        for the AWS CLI calls
  --cfn-signal STACK:LOGICAL_ID   signal this resource's CreationPolicy with
                         the result (AWS CLI from Debian's awscli package)
  --ssm-agent-url URL    install the SSM agent .deb from URL when missing
EOF
    exit 2
}

# ---- options -----------------------------------------------------------
action=install
role='' artifact='' git_url='' git_ref=main source_dir='' work_dir=''
prefix=/usr/local deps=yes user=sensornet use_systemd=auto root=''
ready_timeout='' listen=0.0.0.0:5000 http_port=8080 postgres=''
pg_secret='' pg_host='' pg_port=5432 pg_db=sensornet pg_sslmode=require
server_opts=()
server=10.0.1.10:5000 kind=temperature sensors=1 name='' client_args=()
region='' cfn_signal='' ssm_agent_url=''
token_secret='' token_secret_file='' token_sensors=() tls=off tls_sans=()
tls_publish_ssm='' tls_ca_ssm='' tls_ca_file='' tls_server_name=''

need_arg() { [ $# -ge 2 ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
    case "$1" in
    --role) need_arg "$@"; role=$2; shift ;;
    --artifact) need_arg "$@"; artifact=$2; shift ;;
    --git) need_arg "$@"; git_url=$2; shift ;;
    --ref) need_arg "$@"; git_ref=$2; shift ;;
    --source-dir) need_arg "$@"; source_dir=$2; shift ;;
    --work-dir) need_arg "$@"; work_dir=$2; shift ;;
    --prefix) need_arg "$@"; prefix=$2; shift ;;
    --no-deps) deps=no ;;
    --user) need_arg "$@"; user=$2; shift ;;
    --systemd) use_systemd=yes ;;
    --no-systemd) use_systemd=no ;;
    --root) need_arg "$@"; root=$2; shift ;;
    --ready-timeout) need_arg "$@"; ready_timeout=$2; shift ;;
    --listen) need_arg "$@"; listen=$2; shift ;;
    --http-port) need_arg "$@"; http_port=$2; shift ;;
    --postgres) need_arg "$@"; postgres=$2; shift ;;
    --pg-secret) need_arg "$@"; pg_secret=$2; shift ;;
    --pg-host) need_arg "$@"; pg_host=$2; shift ;;
    --pg-port) need_arg "$@"; pg_port=$2; shift ;;
    --pg-db) need_arg "$@"; pg_db=$2; shift ;;
    --pg-sslmode) need_arg "$@"; pg_sslmode=$2; shift ;;
    --server-opt) need_arg "$@"; server_opts+=("$2"); shift ;;
    --server) need_arg "$@"; server=$2; shift ;;
    --kind) need_arg "$@"; kind=$2; shift ;;
    --sensors) need_arg "$@"; sensors=$2; shift ;;
    --name) need_arg "$@"; name=$2; shift ;;
    --client-arg) need_arg "$@"; client_args+=("$2"); shift ;;
    --region) need_arg "$@"; region=$2; shift ;;
    --cfn-signal) need_arg "$@"; cfn_signal=$2; shift ;;
    --ssm-agent-url) need_arg "$@"; ssm_agent_url=$2; shift ;;
    --token-secret) need_arg "$@"; token_secret=$2; shift ;;
    --token-secret-file) need_arg "$@"; token_secret_file=$2; shift ;;
    --token-sensor) need_arg "$@"; token_sensors+=("$2"); shift ;;
    --tls) need_arg "$@"; tls=${2:-off}; shift ;;
    --tls-san) need_arg "$@"; tls_sans+=("$2"); shift ;;
    --tls-publish-ssm) need_arg "$@"; tls_publish_ssm=$2; shift ;;
    --tls-ca-ssm) need_arg "$@"; tls_ca_ssm=$2; shift ;;
    --tls-ca-file) need_arg "$@"; tls_ca_file=$2; shift ;;
    --tls-server-name) need_arg "$@"; tls_server_name=$2; shift ;;
    --stop) action=stop ;;
    --refresh-pgpass) action=refresh-pgpass ;;
    -h | --help) usage ;;
    *) say "unknown option: $1"; usage ;;
    esac
    shift
done

case "$root" in
/) root= ;;
'') ;;
/*) root=${root%/} ;;
*) die "--root must be an absolute path" ;;
esac
etc_dir=$root/etc/sensornet
state_dir=$root/var/lib/sensornet
log_dir=$root/var/log/sensornet
run_dir=$root/run/sensornet
unit_dir=/etc/systemd/system
server_conf=$etc_dir/sensornet-server.conf
tokens_file=$etc_dir/tokens
tls_dir=$etc_dir/tls
pgpass_conf=$etc_dir/pgpass.conf
[ -n "$work_dir" ] || work_dir=$prefix/src/sensornet
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

is_root() { [ "$(id -u)" -eq 0 ]; }

# ---- CloudFormation signal ---------------------------------------------
step=start
signal_cfn() { # SUCCESS|FAILURE
    local stack=${cfn_signal%%:*} res=${cfn_signal#*:} id i
    id=$(cat /var/lib/cloud/data/instance-id 2>/dev/null || hostname)
    for i in 1 2 3 4 5; do
        if aws cloudformation signal-resource ${region:+--region "$region"} \
            --stack-name "$stack" --logical-resource-id "$res" \
            --unique-id "$id" --status "$1"; then
            say "signalled $1 to $stack/$res as $id"
            return 0
        fi
        sleep $((i * 3))
    done
    say "could not signal $1 to $stack/$res"
    return 1
}
diagnose() { # what the failed service said, for the bootstrap log
    local unit=sensornet-server
    [ "$role" = client ] && unit=sensornet-client@${name:-$kind}
    if [ "$use_systemd" = yes ]; then
        systemctl --no-pager status "$unit.service" >&2 || true
        journalctl --no-pager -u "$unit.service" -n 30 >&2 || true
    elif [ -f "$log_dir/$unit.out" ]; then
        tail -n 30 "$log_dir/$unit.out" >&2 || true
    fi
}
on_exit() {
    local rc=$?
    trap - EXIT
    if [ "$rc" -ne 0 ] && [ "$action" = install ] && [ -n "$role" ]; then
        say "failed during: $step"
        diagnose
    fi
    if [ -n "$cfn_signal" ] && [ "$action" = install ]; then
        if [ "$rc" -eq 0 ]; then
            # Not fatal: an instance that Auto Scaling adds later has no
            # CreationPolicy waiting for it, and its service runs anyway.
            signal_cfn SUCCESS || say "warning: no CloudFormation signal"
        else
            signal_cfn FAILURE || true
        fi
    fi
    exit "$rc"
}
trap on_exit EXIT

# ---- Debian packages ---------------------------------------------------
apt_updated=no
apt_install() { # install the named packages that are missing
    local p missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
            grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    is_root || die "packages missing and not root: ${missing[*]}"
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # First boot: unattended-upgrades may hold the dpkg lock for a while.
    if [ "$apt_updated" = no ]; then
        apt-get -o DPkg::Lock::Timeout=600 update -q
        apt_updated=yes
    fi
    apt-get -o DPkg::Lock::Timeout=600 install -y -q \
        --no-install-recommends "${missing[@]}"
}
need_aws() {
    command -v aws >/dev/null 2>&1 || apt_install awscli
}

# ---- PostgreSQL password file (Secrets Manager) ------------------------
# Reads the RDS-managed secret and writes a libpq passfile owned by the
# service user. libpq reads it at every connection, so a rotated password
# needs no restart, only this again (sensornet-pgpass.timer).
write_pgpass() { # secret-arn host port db passfile owner -> prints user
    local json
    need_aws
    json=$(aws secretsmanager get-secret-value ${region:+--region "$region"} \
        --secret-id "$1" --query SecretString --output text)
    printf '%s' "$json" | python3 -c '
import json, os, sys
host, port, db, path, owner = sys.argv[1:6]
s = json.load(sys.stdin)
esc = lambda v: str(v).replace("\\", "\\\\").replace(":", "\\:")
line = ":".join(esc(v) for v in (host, port, db, s["username"], s["password"]))
tmp = path + ".tmp"
fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    f.write(line + "\n")
if owner and os.geteuid() == 0:
    import pwd
    pw = pwd.getpwnam(owner)
    os.chown(tmp, pw.pw_uid, pw.pw_gid)
os.replace(tmp, path)
print(s["username"])
' "$2" "$3" "$4" "$5" "$6"
}

refresh_pgpass() {
    [ -r "$pgpass_conf" ] || die "$pgpass_conf: not found"
    local PG_SECRET='' PG_HOST='' PG_PORT='' PG_DB='' PG_REGION='' PG_OWNER=''
    # shellcheck disable=SC1090
    . "$pgpass_conf"
    region=${region:-$PG_REGION}
    write_pgpass "$PG_SECRET" "$PG_HOST" "$PG_PORT" "$PG_DB" \
        "$etc_dir/pgpass" "$PG_OWNER" >/dev/null
    say "refreshed $etc_dir/pgpass"
}

# ---- tokens: HMAC-SHA256(master secret, sensor id), in hex -------------
tokens_on() { [ -n "$token_secret" ] || [ -n "$token_secret_file" ]; }
tls_on() { [ "$tls" != off ]; }

master_secret() { # prints the master secret of the tokens
    if [ -n "$token_secret_file" ]; then
        [ -r "$token_secret_file" ] ||
            die "--token-secret-file: cannot read $token_secret_file"
        cat "$token_secret_file"
    else
        need_aws
        aws secretsmanager get-secret-value ${region:+--region "$region"} \
            --secret-id "$token_secret" --query SecretString --output text
    fi
}

# sensor_tokens plain|hash ID...: "<id> <token>" or "<id> sha256:<hex>"
# lines, the master secret on stdin (never in an argument list, which
# other users may see in /proc).
sensor_tokens() {
    python3 -c '
import hashlib, hmac, sys
mode, ids = sys.argv[1], sys.argv[2:]
key = sys.stdin.read().rstrip("\r\n").encode()
if not key:
    sys.exit("bootstrap: the master secret of the tokens is empty")
for i in ids:
    t = hmac.new(key, i.encode(), hashlib.sha256).hexdigest()
    if mode == "hash":
        t = "sha256:" + hashlib.sha256(t.encode()).hexdigest()
    print(i, t)
' "$@"
}

expand_ids() { # ID N: the ids of sensornet-client --id ID --sensors N
    local i
    if [ "$2" -le 1 ]; then
        echo "$1"
    else
        for ((i = 1; i <= $2; i++)); do echo "$1-$i"; done
    fi
}

token_ids() { # the server's sensors, from --token-sensor ID[,N]
    local spec n
    for spec in "${token_sensors[@]}"; do
        case "$spec" in
        *,*)
            n=${spec##*,}
            case "$n" in '' | *[!0-9]*) die "--token-sensor $spec: N" ;; esac
            expand_ids "${spec%,*}" "$n"
            ;;
        '') ;;
        *) echo "$spec" ;;
        esac
    done
}

client_ids() { # the ids this client sends as
    local id='' i
    for ((i = 0; i < ${#client_args[@]}; i++)); do
        case "${client_args[i]}" in
        --id | -i) id=${client_args[i + 1]:-} ;;
        --id=*) id=${client_args[i]#--id=} ;;
        esac
    done
    if [ -z "$id" ]; then
        case "$kind" in temperature) id=Sensor1 ;; *) id=Sensor2 ;; esac
    fi
    expand_ids "$id" "$sensors"
}

write_tokens_file() { # the server's tokens file: hashes only
    local ids=() id
    while IFS= read -r id; do ids+=("$id"); done < <(token_ids)
    [ ${#ids[@]} -gt 0 ] ||
        say "warning: tokens on, but no --token-sensor: no sensor gets in"
    {
        echo "# Written by deploy/bootstrap.sh: for each sensor, the SHA-256"
        echo "# of its token, HMAC-SHA256(master secret, sensor id) in hex."
        master_secret | sensor_tokens hash "${ids[@]}"
    } >"$tokens_file.tmp"
    chmod 0640 "$tokens_file.tmp"
    if is_root; then chown "root:$(id -gn "$user")" "$tokens_file.tmp"; fi
    mv "$tokens_file.tmp" "$tokens_file"
    say "tokens file: ${#ids[@]} sensors in $tokens_file"
}

client_token_file() { # where the client reads its token(s)
    if [ "$use_systemd" = yes ]; then
        echo "/run/credentials/sensornet-client@$name.service/token"
    else
        echo "$etc_dir/client-$name.token"
    fi
}

write_client_token() { # the token, or "<id> <token>" lines for --sensors
    local f=$etc_dir/client-$name.token ids=() id
    while IFS= read -r id; do ids+=("$id"); done < <(client_ids)
    (
        umask 077
        if [ "${#ids[@]}" -eq 1 ]; then
            master_secret | sensor_tokens plain "${ids[0]}" |
                cut -d' ' -f2 >"$f.tmp"
        else
            master_secret | sensor_tokens plain "${ids[@]}" >"$f.tmp"
        fi
    )
    # Under systemd, LoadCredential= hands it to the DynamicUser.
    if [ "$use_systemd" = no ] && is_root; then chown "$user:" "$f.tmp"; fi
    mv "$f.tmp" "$f"
    say "token of ${ids[0]}${ids[1]:+ .. ${ids[-1]}} in $f"
}

# ---- TLS: a private CA and the server's certificate --------------------
imds_public_ip() { # on EC2 (IMDSv2): the public address, if any
    local t
    [ -n "$region" ] && command -v curl >/dev/null 2>&1 || return 0
    t=$(curl -sf --connect-timeout 1 --max-time 2 -X PUT \
        -H "X-aws-ec2-metadata-token-ttl-seconds: 60" \
        http://169.254.169.254/latest/api/token) || return 0
    curl -sf --connect-timeout 1 --max-time 2 \
        -H "X-aws-ec2-metadata-token: $t" \
        http://169.254.169.254/latest/meta-data/public-ipv4 || true
}

server_sans() { # subjectAltName of the server certificate, sorted
    local a h names=(DNS:localhost IP:127.0.0.1)
    # shellcheck disable=SC2046 # hostname -I: blank-separated addresses
    for a in $(hostname -I 2>/dev/null) $(imds_public_ip) "${listen%:*}" \
        "${tls_sans[@]}"; do
        a=${a#[}
        a=${a%]}
        case "$a" in
        '' | 0.0.0.0 | '*' | ::) ;;
        *:*) names+=("IP:$a") ;;
        *[!0-9.]*) names+=("DNS:$a") ;;
        *) names+=("IP:$a") ;;
        esac
    done
    for h in "$(hostname -f 2>/dev/null || true)" "$(hostname)"; do
        case "$h" in '' | localhost) ;; *) names+=("DNS:$h") ;; esac
    done
    printf '%s\n' "${names[@]}" | sort -u | paste -sd, -
}

make_tls() { # first run: a CA; every run: a valid server certificate
    local ca_key=$tls_dir/ca.key ca_crt=$tls_dir/ca.crt
    local key=$tls_dir/server.key crt=$tls_dir/server.crt san
    command -v openssl >/dev/null 2>&1 || apt_install openssl
    install -d -m 0755 "$tls_dir"
    if [ ! -s "$ca_key" ] || [ ! -s "$ca_crt" ]; then
        say "TLS: generating a private CA in $tls_dir"
        (umask 077 && openssl genpkey -algorithm EC \
            -pkeyopt ec_paramgen_curve:P-256 -out "$ca_key.tmp")
        openssl req -x509 -new -key "$ca_key.tmp" -sha256 -days 3650 \
            -subj "/CN=sensornet CA $(hostname)" \
            -addext basicConstraints=critical,CA:TRUE \
            -addext keyUsage=critical,keyCertSign,cRLSign -out "$ca_crt.tmp"
        mv "$ca_key.tmp" "$ca_key"
        mv "$ca_crt.tmp" "$ca_crt"
        rm -f "$crt"
    fi
    san=$(server_sans)
    if [ -s "$key" ] && [ -s "$crt" ] &&
        [ "$(cat "$tls_dir/server.san" 2>/dev/null)" = "$san" ] &&
        openssl verify -CAfile "$ca_crt" "$crt" >/dev/null 2>&1 &&
        openssl x509 -in "$crt" -noout -checkend 2592000 >/dev/null; then
        say "TLS: keeping $crt"
    else
        say "TLS: issuing $crt for $san"
        (umask 077 && openssl genpkey -algorithm EC \
            -pkeyopt ec_paramgen_curve:P-256 -out "$key.tmp")
        openssl req -new -key "$key.tmp" -subj "/CN=$(hostname)" \
            -out "$tls_dir/server.csr"
        openssl x509 -req -in "$tls_dir/server.csr" -CA "$ca_crt" \
            -CAkey "$ca_key" -CAcreateserial -CAserial "$tls_dir/ca.srl" \
            -days 825 -sha256 -out "$crt.tmp" -extfile <(printf '%s\n' \
                "subjectAltName=$san" "extendedKeyUsage=serverAuth" \
                "basicConstraints=critical,CA:FALSE" \
                "keyUsage=critical,digitalSignature") 2>/dev/null
        rm -f "$tls_dir/server.csr"
        mv "$key.tmp" "$key"
        mv "$crt.tmp" "$crt"
        echo "$san" >"$tls_dir/server.san"
    fi
    chmod 0600 "$ca_key"
    chmod 0644 "$ca_crt" "$crt"
    chmod 0640 "$key"
    if is_root; then chown "root:$(id -gn "$user")" "$key"; fi
}

publish_ca() { # the CA certificate (public) into the SSM parameter
    need_aws
    aws ssm put-parameter ${region:+--region "$region"} \
        --name "$tls_publish_ssm" --type String --overwrite \
        --value "file://$tls_dir/ca.crt" >/dev/null
    say "published the CA certificate to SSM parameter $tls_publish_ssm"
}

fetch_ca() { # client: the CA certificate to trust, into etc/ca.crt
    local f=$etc_dir/ca.crt v='' deadline=$((SECONDS + ready_timeout))
    command -v openssl >/dev/null 2>&1 || apt_install openssl
    if [ -n "$tls_ca_file" ]; then
        cp "$tls_ca_file" "$f.tmp"
    else
        need_aws
        say "waiting for the CA certificate in SSM parameter $tls_ca_ssm"
        until v=$(aws ssm get-parameter ${region:+--region "$region"} \
            --name "$tls_ca_ssm" --query Parameter.Value --output text \
            2>/dev/null) && [[ "$v" == "-----BEGIN CERTIFICATE-----"* ]]; do
            [ "$SECONDS" -lt "$deadline" ] ||
                die "no CA certificate in $tls_ca_ssm after ${ready_timeout}s"
            sleep 2
        done
        printf '%s\n' "$v" >"$f.tmp"
    fi
    openssl x509 -in "$f.tmp" -noout 2>/dev/null ||
        die "the CA certificate is not a PEM certificate"
    chmod 0644 "$f.tmp"
    mv "$f.tmp" "$f"
    say "TLS: trusting the CA in $f"
}

# ---- processes without systemd -----------------------------------------
pid_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

stop_pidfile() { # pidfile
    local pid i
    pid=$(cat "$1" 2>/dev/null || true)
    if pid_alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 300); do
            pid_alive "$pid" || break
            sleep 0.1
        done
        if pid_alive "$pid"; then
            say "pid $pid did not stop in 30 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$1"
}

stop_all() {
    local f
    for f in "$run_dir"/*.pid; do
        [ -e "$f" ] || continue
        say "stopping $(basename "$f" .pid)"
        stop_pidfile "$f"
    done
}

start_bg() { # name -- argv...: the systemd unit's command, in background
    local unit=$1 pidf=$run_dir/$1.pid out=$log_dir/$1.out pid
    shift 2
    stop_pidfile "$pidf"
    local as=()
    if [ "$user" != "$(id -un)" ]; then
        as=(setpriv --reuid="$user" --regid="$(id -g "$user")"
            --init-groups --)
    fi
    # The unit's StateDirectory= (the client's spool), made here.
    local sdir=$state_dir
    case "$unit" in
    sensornet-client@*)
        sdir=$state_dir/sensornet-client/${unit#sensornet-client@}
        install -d -m 0700 "$sdir"
        if is_root; then chown "$user:" "$sdir"; fi
        ;;
    esac
    # setsid: the service outlives this script and the caller's session.
    (cd "$sdir" && export STATE_DIRECTORY="$sdir" &&
        exec setsid "${as[@]}" "$@" \
        </dev/null >>"$out" 2>&1) &
    pid=$!
    echo "$pid" >"$pidf"
    say "started $unit (pid $pid): $*"
}

# ---- what the role runs ------------------------------------------------
server_supports() { # option name, from --help
    local help
    # Not piped into grep -q: with pipefail, the server's SIGPIPE once
    # grep has seen enough would read as "not supported".
    help=$("$prefix/bin/sensornet-server" --help 2>&1 || true)
    grep -Eq -- "^ +--$1( |$)" <<<"$help"
}

write_server_conf() {
    local line kv
    {
        echo "# Written by deploy/bootstrap.sh; keys: sensornet-server --help."
        echo "# Edit, then: systemctl restart sensornet-server"
        echo "listen $listen"
        echo "log $log_dir/log.txt"
        if [ -n "$postgres" ]; then
            echo "postgres $postgres"
        else
            echo "db $state_dir/sensornet.db"
        fi
        if ! server_supports http; then
            say "this sensornet-server has no --http: dashboard off"
        elif [ "$http_port" != 0 ]; then
            echo "http 0.0.0.0:$http_port"
        else
            echo "http off"
        fi
        if tokens_on; then
            echo "tokens $tokens_file"
        fi
        if tls_on; then
            echo "tls-cert $tls_dir/server.crt"
            echo "tls-key $tls_dir/server.key"
        fi
        for kv in "${server_opts[@]}"; do
            line=${kv/=/ }
            echo "$line"
        done
    } >"$server_conf.tmp"
    chmod 0644 "$server_conf.tmp"
    mv "$server_conf.tmp" "$server_conf"
}

client_conf_line() {
    local args=(--server "$server" --kind "$kind") a
    if [ "$sensors" -gt 1 ]; then
        args+=(--sensors "$sensors" --quiet)
    fi
    if tls_on; then
        args+=(--tls)
        if [ -n "$tls_ca_ssm$tls_ca_file" ]; then
            args+=(--tls-ca "$etc_dir/ca.crt")
        fi
        if [ -n "$tls_server_name" ]; then
            args+=(--tls-server-name "$tls_server_name")
        fi
    fi
    if tokens_on; then
        args+=(--token-file "$(client_token_file)")
    fi
    args+=("${client_args[@]}")
    for a in "${args[@]}"; do
        case "$a" in
        *[[:space:]\"\'\\]* | '')
            die "client argument '$a': no blanks, quotes or backslashes"
            ;;
        esac
    done
    echo "SENSORNET_CLIENT_ARGS=${args[*]}"
}

# The unit files from the source tree, for this prefix and user.
install_unit() { # file
    local f=$1 dst
    dst=$unit_dir/$(basename "$1")
    sed -e "s|/usr/local/bin/|$prefix/bin/|g" \
        -e "s|/usr/local/lib/sensornet/|$prefix/lib/sensornet/|g" \
        -e "s|^User=sensornet$|User=$user|" \
        -e "s|^Group=sensornet$|Group=$user|" "$f" >"$dst.tmp"
    mv "$dst.tmp" "$dst"
}

# ---- readiness ---------------------------------------------------------
probe_server() { # host port [CA file]: PING answered with PONG?
    python3 - "$@" 2>/dev/null <<'EOF'
import socket, ssl, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, port), timeout=5)
if len(sys.argv) > 3:  # TLS, the certificate checked as a client would
    ctx = ssl.create_default_context(cafile=sys.argv[3])
    s = ctx.wrap_socket(s, server_hostname=host)
s.sendall(b"PING\n")
sys.exit(0 if s.makefile("rb").readline() == b"PONG\n" else 1)
EOF
}

probe_addr() { # first --listen address, as something to connect to
    local a=${listen%%,*} host port
    port=${a##*:}
    host=${a%:*}
    host=${host#[}
    host=${host%]}
    case "$host" in
    0.0.0.0 | '' | '*') host=127.0.0.1 ;;
    ::) host=::1 ;;
    esac
    echo "$host $port"
}

wait_ready() { # what test-command...
    local what=$1 deadline
    shift
    deadline=$((SECONDS + ready_timeout))
    until "$@"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            say "$what: not ready after ${ready_timeout}s"
            return 1
        fi
        sleep 0.25
    done
    say "$what: ready"
}

server_ready() {
    local hp
    if [ "$use_systemd" = no ]; then
        pid_alive "$(cat "$run_dir/sensornet-server.pid")" ||
            die "sensornet-server exited; its last output follows"
    fi
    read -r -a hp <<<"$(probe_addr)"
    if tls_on; then hp+=("$tls_dir/ca.crt"); fi
    probe_server "${hp[@]}"
}

client_output() {
    if [ "$use_systemd" = yes ]; then
        journalctl -u "sensornet-client@$name.service" --since "@$t_start" \
            -o cat --no-pager 2>/dev/null || true
    else
        cat "$log_dir/sensornet-client@$name.out" 2>/dev/null || true
    fi
}

client_ready() {
    if [ "$use_systemd" = no ]; then
        pid_alive "$(cat "$run_dir/sensornet-client@$name.pid")" ||
            die "sensornet-client exited; its last output follows"
    fi
    # "Confirmado:" per acknowledgement; with --sensors the status line.
    client_output | grep -Eq 'Confirmado:|acked=[1-9]'
}

# ---- main --------------------------------------------------------------
if [ "$use_systemd" = auto ]; then
    if [ -d /run/systemd/system ] && [ -z "$root" ]; then
        use_systemd=yes
    else
        use_systemd=no
    fi
fi
if [ "$use_systemd" = yes ]; then
    [ -z "$root" ] || die "--root works only with --no-systemd"
    [ -d /run/systemd/system ] || die "--systemd: systemd is not running"
fi

case "$action" in
stop)
    if [ "$use_systemd" = yes ]; then
        systemctl stop 'sensornet-*' || true
    else
        stop_all
    fi
    exit 0
    ;;
refresh-pgpass)
    refresh_pgpass
    exit 0
    ;;
esac

case "$role" in
server)
    : "${ready_timeout:=120}"
    if [ -n "$pg_secret" ] && [ -z "$pg_host" ]; then
        die "--pg-secret needs --pg-host"
    fi
    ;;
client)
    : "${ready_timeout:=1200}"
    case "$kind" in temperature | humidity) ;; *) die "--kind: $kind" ;; esac
    case "$sensors" in '' | *[!0-9]*) die "--sensors: $sensors" ;; esac
    if [ -z "$name" ]; then
        if [ "$sensors" -gt 1 ]; then name=load; else name=$kind; fi
    fi
    case "$name" in *[!A-Za-z0-9_-]* | '') die "--name: $name" ;; esac
    ;;
*) say "--role server or --role client"; usage ;;
esac
case "$tls" in
off | '') tls=off ;;
auto | on) tls=auto ;;
*) die "--tls off|auto" ;;
esac
if [ -n "$tls_ca_ssm" ] && [ -n "$tls_ca_file" ]; then
    die "--tls-ca-ssm or --tls-ca-file, not both"
fi
if [ -n "$token_secret" ] && [ -n "$token_secret_file" ]; then
    die "--token-secret or --token-secret-file, not both"
fi
if [ -n "$cfn_signal" ]; then
    case "$cfn_signal" in
    *?:?*) ;;
    *) die "--cfn-signal STACK:LOGICAL_ID" ;;
    esac
    need_aws
fi

# 0. Optional, first, so that a failed bootstrap can still be looked at
# through Session Manager: the SSM agent (Debian's images lack it).
if [ -n "$ssm_agent_url" ] && ! dpkg-query -W -f='${Status}' \
    amazon-ssm-agent 2>/dev/null | grep -q "install ok installed"; then
    step="installing the SSM agent"
    command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates
    if curl -fsSL --retry 5 -o /tmp/amazon-ssm-agent.deb "$ssm_agent_url" &&
        apt-get -o DPkg::Lock::Timeout=600 install -y -q \
            /tmp/amazon-ssm-agent.deb; then
        systemctl enable --now amazon-ssm-agent || true
    else
        say "warning: SSM agent not installed (no Session Manager)"
    fi
fi

# 1. The source tree.
step="getting the source"
mkdir -p "$(dirname "$work_dir")"
if [ -n "$source_dir" ]; then
    src=$(cd "$source_dir" && pwd)
elif [ -n "$artifact" ]; then
    case "$artifact" in
    http://* | https://*)
        command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates
        tarball=$work_dir.download.tar.gz
        curl -fsSL --retry 5 --retry-connrefused -o "$tarball" "$artifact"
        ;;
    *)
        tarball=$(cd "$(dirname "$artifact")" && pwd)/$(basename "$artifact")
        ;;
    esac
    sum=$(sha256sum "$tarball" | cut -d' ' -f1)
    if [ "$(cat "$work_dir/.sensornet-artifact" 2>/dev/null)" != "$sum" ]; then
        rm -rf "$work_dir"
        mkdir -p "$work_dir"
        tar -xzf "$tarball" -C "$work_dir" --strip-components=1
        echo "$sum" >"$work_dir/.sensornet-artifact"
    else
        say "artifact already unpacked in $work_dir"
    fi
    src=$work_dir
elif [ -n "$git_url" ]; then
    command -v git >/dev/null 2>&1 || apt_install git ca-certificates
    if [ -d "$work_dir/.git" ]; then
        git -C "$work_dir" fetch --depth 1 origin "$git_ref"
        git -C "$work_dir" checkout -q --force FETCH_HEAD
    else
        rm -rf "$work_dir"
        git clone -q --depth 1 --branch "$git_ref" "$git_url" "$work_dir"
    fi
    src=$work_dir
else
    src=$(cd "$script_dir/.." && pwd)
fi
if [ ! -f "$src/Makefile" ] || [ ! -d "$src/src/server" ]; then
    die "$src is not a sensornet source tree"
fi
say "source: $src"

# 2. Build and install.
step="installing build packages"
if [ "$deps" = yes ]; then
    bash "$src/scripts/deps.sh"
fi
step="building"
make -C "$src" -s -j"$(nproc)" install PREFIX="$prefix"
install -d "$prefix/lib/sensornet"
install -m 0755 "$src/deploy/bootstrap.sh" "$prefix/lib/sensornet/bootstrap.sh"
say "installed $("$prefix/bin/sensornet-server" --version) in $prefix/bin"

# 3. User, directories, configuration.
step="configuring"
# (Under systemd the client runs as a DynamicUser: no account needed.)
if [ "$role" = server ] || [ "$use_systemd" = no ]; then
    need_user=$user
else
    need_user=root
fi
if [ "$need_user" != root ] && ! getent passwd "$need_user" >/dev/null; then
    is_root || die "user $user does not exist and this is not root"
    useradd --system --user-group --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin "$need_user"
    say "created system user $need_user"
fi
install -d -m 0755 "$etc_dir"
if [ "$use_systemd" = no ]; then
    install -d -m 0755 "$run_dir"
    install -d -m 0750 "$state_dir" "$log_dir"
    if is_root; then
        chown "$user:" "$state_dir" "$log_dir"
    fi
fi

if [ "$role" = server ]; then
    if [ -n "$pg_secret" ]; then
        step="reading the database secret"
        cat >"$pgpass_conf" <<EOF
# deploy/bootstrap.sh --refresh-pgpass (sensornet-pgpass.timer) reads this.
PG_SECRET='$pg_secret'
PG_HOST='$pg_host'
PG_PORT='$pg_port'
PG_DB='$pg_db'
PG_REGION='$region'
PG_OWNER='$user'
EOF
        pg_user=$(write_pgpass "$pg_secret" "$pg_host" "$pg_port" "$pg_db" \
            "$etc_dir/pgpass" "$user")
        postgres="host=$pg_host port=$pg_port dbname=$pg_db user=$pg_user"
        postgres+=" sslmode=$pg_sslmode connect_timeout=10"
        postgres+=" passfile=$etc_dir/pgpass"
    fi
    if tokens_on; then
        step="writing the tokens file"
        write_tokens_file
    fi
    if tls_on; then
        step="making the TLS certificate"
        make_tls
    fi
    step="configuring"
    write_server_conf
    if [ -n "$pg_secret" ] && is_root; then
        # psql as the collector, for people: sensornet-psql -c '...'
        apt_install postgresql-client
        cat >"$prefix/bin/sensornet-psql" <<EOF
#!/bin/sh
# psql on the collector's database with its credentials (bootstrap.sh).
conninfo=\$(sed -n 's/^postgres //p' $server_conf)
exec runuser -u $user -- psql "\$conninfo" "\$@"
EOF
        chmod 0755 "$prefix/bin/sensornet-psql"
    fi
    step="checking the server configuration"
    "$prefix/bin/sensornet-server" --config "$server_conf" --check-config
else
    if tls_on && [ -n "$tls_ca_ssm$tls_ca_file" ]; then
        step="getting the CA certificate"
        fetch_ca
    fi
    if tokens_on; then
        step="computing the token"
        write_client_token
    fi
    client_conf_line >"$etc_dir/client-$name.conf"
fi

# 4. Start.
step="starting"
t_start=$(date +%s)
if [ "$use_systemd" = yes ]; then
    install_unit "$src/deploy/systemd/sensornet-server.service"
    install_unit "$src/deploy/systemd/sensornet-client@.service"
    install_unit "$src/deploy/systemd/sensornet-pgpass.service"
    install_unit "$src/deploy/systemd/sensornet-pgpass.timer"
    if [ -d /etc/logrotate.d ] && [ "$role" = server ]; then
        cat >/etc/logrotate.d/sensornet <<EOF
$log_dir/log.txt {
    daily
    maxsize 200M
    rotate 14
    compress
    delaycompress
    missingok
    notifempty
    postrotate
        systemctl reload sensornet-server.service >/dev/null 2>&1 || true
    endscript
}
EOF
    fi
    systemctl daemon-reload
    if [ "$role" = server ]; then
        systemctl enable sensornet-server.service
        # Type=notify: returns once the server has sent READY=1.
        systemctl restart sensornet-server.service
        if [ -n "$pg_secret" ]; then
            systemctl enable --now sensornet-pgpass.timer
        fi
    else
        dropin=$unit_dir/sensornet-client@$name.service.d
        if tokens_on; then
            install -d -m 0755 "$dropin"
            printf '%s\n' "# deploy/bootstrap.sh: the token, for the DynamicUser" \
                "[Service]" \
                "LoadCredential=token:$etc_dir/client-$name.token" \
                >"$dropin/token.conf"
        else
            rm -f "$dropin/token.conf"
        fi
        systemctl daemon-reload
        systemctl enable "sensornet-client@$name.service"
        systemctl restart "sensornet-client@$name.service"
    fi
else
    if [ "$role" = server ]; then
        start_bg sensornet-server -- "$prefix/bin/sensornet-server" \
            --config "$server_conf"
    else
        line=$(client_conf_line)
        read -r -a argv <<<"${line#SENSORNET_CLIENT_ARGS=}"
        start_bg "sensornet-client@$name" -- \
            "$prefix/bin/sensornet-client" "${argv[@]}"
    fi
fi

# 5. Wait until it works.
if [ "$role" = server ]; then
    step="waiting for the server to answer PING"
    wait_ready sensornet-server server_ready
    if tls_on && [ -n "$tls_publish_ssm" ]; then
        step="publishing the CA certificate"
        publish_ca
    fi
else
    step="waiting for the first acknowledgement from $server"
    wait_ready "sensornet-client@$name" client_ready
fi

step=finished
say "$role ready"
