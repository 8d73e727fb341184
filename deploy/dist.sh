#!/usr/bin/env bash
# deploy/dist.sh OUTDIR: the source tarball that deploy/bootstrap.sh
# installs from (make dist). It holds the files git tracks plus the new
# ones it does not ignore, as they are in the work tree (in a fresh clone:
# exactly HEAD), under sensornet-VERSION/, with fixed owners, modes from
# the tree and the time of the last commit, so the same tree gives the same
# bytes. Prints the tarball's path; OUTDIR/sensornet.tar.gz links to it.
# SPDX-License-Identifier: MIT
set -euo pipefail

out=${1:?usage: dist.sh OUTDIR}
cd "$(dirname "$0")/.."
git rev-parse --git-dir >/dev/null 2>&1 || {
    echo "dist.sh: not a git work tree" >&2
    exit 1
}
version=$(git describe --tags --always --dirty 2>/dev/null || echo unknown)
name=sensornet-$version
mtime=$(git log -1 --format=%ct 2>/dev/null || echo 0)
mkdir -p "$out"
out=$(cd "$out" && pwd)
tarball=$out/$name.tar.gz

# Tracked and untracked-but-not-ignored files that exist (a tracked file
# deleted in the work tree is left out, as a commit would).
git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do
        if [ -f "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
    done | LC_ALL=C sort -zu |
    tar --null --no-recursion --files-from=- \
        --transform="s,^,$name/," --owner=0 --group=0 --numeric-owner \
        --mode=u+w,go-w --mtime="@$mtime" -cf - |
    gzip -n -9 >"$tarball.tmp"
mv "$tarball.tmp" "$tarball"
ln -sfn "$name.tar.gz" "$out/sensornet.tar.gz"
echo "$tarball"
