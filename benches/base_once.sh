#!/usr/bin/env bash
# Benchmark (not a test): the base crosses once per registry. Bytes the development registry
# receives (counted by benches/pace.py in front of it, at loopback speed) for a first push of
# three images of one project on one base from a production registry, against the base's size:
#   layerup: one `layerup push` of the project (the images at once), then a fourth image alone;
#   peer: `umoci insert` + `skopeo copy` per image, one after another (skopeo's blob-info cache
#   mounts what an earlier copy put in another repository of the same registry).
#
#   ./benches/base_once.sh
set -euo pipefail
cd "$(dirname "$0")/.."
for t in docker-registry skopeo umoci /usr/bin/time busybox python3; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install -y docker-registry skopeo umoci time busybox-static python3" >&2; exit 1; }
done
. benches/common.sh
registry prod 5400
prod=$host
registry dev 5500
dev_port=${host##*:}
front_port=$(free_port $((dev_port + 1)))
dev="127.0.0.1:$front_port"
echo "0 0" > "$work/counts"
python3 benches/pace.py "$front_port" "$dev_port" 10000000000 0 "$work/counts" &
pids+=($!)
wait_port "$front_port"

# The base: busybox and /usr/lib's first 40 MB of files, two layers, in the prod registry.
mkdir -p "$work/lib/usr/lib"
{ find /usr/lib -maxdepth 2 -type f -size -4M || true; } | sort > "$work/libs"
head -400 "$work/libs" | while read -r f; do cp "$f" "$work/lib/usr/lib/" 2>/dev/null || true; done
busybox_base "$work/lib"
skopeo copy -q --dest-tls-verify=false "oci:$work/layout:base" "docker://$prod/prod/base:1"
base_bytes=$(skopeo inspect --raw --tls-verify=false "docker://$prod/prod/base:1" \
  | python3 -c 'import json,sys; m=json.load(sys.stdin); print(sum(l["size"] for l in m["layers"]))')

up() { python3 -c 'import sys; print(open(sys.argv[1]).read().split()[0])' "$work/counts"; }
ratio() { python3 -c "import sys; print(f'{int(sys.argv[1]) / int(sys.argv[2]):.2f}')" "$1" "$2"; }

mkdir -p "$work/shop"
{
  printf 'base = "%s/prod/base:1"\n' "$prod"
  for s in 1 2 3; do
    mkdir -p "$work/shop/s$s"; echo "service $s" > "$work/shop/s$s/NAME"
    printf '[images.s%s]\nto = "%s/shop/s%s:dev"\nmappings = ["./s%s:/app"]\n' "$s" "$dev" "$s" "$s"
  done
} > "$work/shop/layerup.toml"
start=$(up)
(cd "$work/shop" && "$layerup" push -q --insecure >/dev/null)
project=$(( $(up) - start ))
mkdir -p "$work/extra"; echo extra > "$work/extra/NAME"
start=$(up)
"$layerup" push -q --insecure "$work/extra:/app" --base "$prod/prod/base:1" --to "$dev/shop/s4:dev" >/dev/null
fourth=$(( $(up) - start ))

start=$(up)
for s in 1 2 3; do
  umoci tag --image "$work/layout:base" "p$s" >/dev/null
  umoci insert --image "$work/layout:p$s" "$work/shop/s$s" /app >/dev/null
  skopeo copy -q --dest-tls-verify=false "oci:$work/layout:p$s" "docker://$dev/peer/s$s:dev"
done
peer=$(( $(up) - start ))

echo "base layers: $base_bytes B"
printf '%-46s %14s %8s\n' case "bytes received" "× base"
printf '%-46s %14s %8s\n' "layerup: project of 3 images, one push" "$project" "$(ratio "$project" "$base_bytes")"
printf '%-46s %14s %8s\n' "layerup: a 4th image alone, afterwards" "$fourth" "$(ratio "$fourth" "$base_bytes")"
printf '%-46s %14s %8s\n' "umoci + skopeo: 3 images, one after another" "$peer" "$(ratio "$peer" "$base_bytes")"
