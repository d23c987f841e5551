#!/usr/bin/env bash
# Benchmark (not a test): a cold `layerup copy` of a 256 MiB image between two registries on
# loopback, against the destination registry's write floor: the same blobs PUT from local files,
# all at once (curl: POST, then PUT with the body), into a fresh registry each run. Medians of RUNS.
#
#   ./benches/copy_floor.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
for t in docker-registry skopeo umoci /usr/bin/time busybox curl bc; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install -y docker-registry skopeo umoci time busybox-static curl bc" >&2; exit 1; }
done
. benches/common.sh
registry src 5600; src=$host
busybox_base
skopeo copy -q --dest-tls-verify=false "oci:$work/layout:base" "docker://$src/base:1"
mkdir -p "$work/big"; head -c $((256 << 20)) /dev/urandom > "$work/big/part"
"$layerup" -q push --full "$work/big:/data" --base "$src/base:1" --to "$src/big:1" >/dev/null
skopeo copy -q --src-tls-verify=false "docker://$src/big:1" "dir:$work/dir"

put_local() { # put_local DST: every blob of $work/dir PUT at once
  local cp=() f n
  for f in "$work"/dir/*; do
    n=$(basename "$f"); case $n in manifest.json|version) continue ;; esac
    ( loc=$(curl -sf -X POST -D - -o /dev/null "http://$1/v2/floor/big/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
      case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
      curl -sf -X PUT -H 'Content-Type: application/octet-stream' -T "$f" -o /dev/null "$loc${sep}digest=sha256:$n" ) &
    cp+=($!)
  done
  wait "${cp[@]}"
}
for i in $(seq "$runs"); do
  registry "a$i" $((5700 + 2 * i))
  measure "$work/layerup" "$layerup" -q copy "$src/big:1" "$host/x/big:1"
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; rm -rf "${work:?}/a$i"
  registry "b$i" $((5800 + 2 * i))
  start=$(date +%s.%N); put_local "$host"; end=$(date +%s.%N)
  echo "$end - $start" | bc >> "$work/floor"
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; rm -rf "${work:?}/b$i"
done
l=$(cut -d' ' -f1 "$work/layerup" | median); f=$(median < "$work/floor")
echo "256 MiB image, cold, median of $runs: layerup copy $l s; local PUT floor $(printf '%.2f' "$f") s; $(python3 -c "print(f'{$l / $f:.2f}')")x"
