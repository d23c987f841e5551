#!/usr/bin/env bash
# What the base's record (issue 21: each base layer's tar headers, read once per layer digest)
# costs a push: the first push of a new base reads its layers once; later pushes, and other bases
# that share those layers, read the record from disk. Medians of RUNS, on loopback and through
# a 20 Mbit/s, 20 ms-each-way link in front of the base's registry (benches/pace.py).
#
#   ./benches/base_record.sh [MIB] [RUNS]     (default: a 64 MiB base, 3 runs)
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-64}
runs=${2:-3}
source benches/common.sh

# A base of two layers: busybox, and MIB MiB of incompressible files in 4,000 files (a runtime's
# and its libraries' worth of entries).
mkdir -p "$work/bulk/usr/lib/app"
python3 - "$work/bulk/usr/lib/app" "$mib" <<'EOF'
import os, sys
root, mib = sys.argv[1], int(sys.argv[2])
n = 4000
size = mib * (1 << 20) // n
for i in range(n):
    d = os.path.join(root, f"d{i % 64:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}.so"), "wb") as f:
        f.write(os.urandom(size))
EOF
busybox_base "$work/bulk"
registry prod 5400; prod_host=$host
skopeo copy -q --dest-tls-verify=false "oci:$work/layout:base" "docker://$prod_host/prod/big:1"
registry dev 5500; dev_host=$host
mkdir -p "$work/src"; echo hi > "$work/src/app.py"

slow_port=$(free_port 5600)
python3 benches/pace.py "$slow_port" "${prod_host#*:}" 20000000 20 "$work/counts" &
pids+=($!)
wait_port "$slow_port"
slow_host="127.0.0.1:$slow_port"

# push FROM_HOST N: a first push of the base to a fresh destination; the base's records kept
# (warm) or not (cold).
one() {
  local link=$1 n=$2 keep=$3 from=$prod_host
  [ "$link" = slow ] && from=$slow_host
  rm -rf "$work/state/"*.json
  [ "$keep" = keep ] || rm -rf "$work/state/bases"
  measure "$work/times-$link-$keep" "$layerup" push "$work/src:/app" \
    --base "$from/prod/big:1" --to "$dev_host/dev/b$n-$link-$keep:1"
}
report() {
  local label=$1 f=$2
  printf '%-58s %6.2f s\n' "$label" "$(cut -d' ' -f1 "$f" | median)"
}
for i in $(seq "$runs"); do
  one fast "$i" cold
  one fast "$i" keep
  one slow "$i" cold
  one slow "$i" keep
done
echo "base: $mib MiB in 2 layers; first push of it to a new destination (the base copied too)"
report "loopback, record read now" "$work/times-fast-cold"
report "loopback, record kept" "$work/times-fast-keep"
report "20 Mbit/s 20 ms, record read now" "$work/times-slow-cold"
report "20 Mbit/s 20 ms, record kept" "$work/times-slow-keep"
du -sh "$work/state/bases" | awk '{print "records kept on disk: " $1}'
