#!/usr/bin/env bash
# Benchmark (not a test): `layerup copy` against `skopeo copy` and against the registry's own
# floor (benches/floor.sh: curl streaming each blob source → destination in one upload, 4 at a
# time), registry to registry on loopback, in the same run: a real multi-layer image of 100+ MB (this machine's Python standard library
# and /usr/bin on busybox) and a 1 GiB one (four 256 MiB layers that do not compress), each
# cold (a new repository every run: every blob moves) and warm (the same copy again: nothing
# moves). Every cold run gets a fresh destination registry of its own, so that nothing — not even
# skopeo's blob-info cache, which would mount blobs from an earlier run's repository — spares it
# any bytes. Prints wall time and peak RSS (GNU time), medians of RUNS.
#
#   ./benches/copy.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
for t in docker-registry skopeo umoci /usr/bin/time busybox python3 curl; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install -y docker-registry skopeo umoci time busybox-static python3 curl" >&2; exit 1; }
done
. benches/common.sh
registry src 5300
src=$host

# The base: busybox, made by umoci, in the source registry.
busybox_base
skopeo copy -q --dest-tls-verify=false "oci:$work/layout:base" "docker://$src/base:1"

stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
"$layerup" -q push --full "$stdlib:/usr/lib/python" /usr/bin:/usr/bin --base "$src/base:1" --to "$src/real:1" >/dev/null
mkdir -p "$work/big"
for i in 1 2 3 4; do head -c $((256 << 20)) /dev/urandom > "$work/big/part$i"; done
"$layerup" -q push --full "$work/big:/data" --base "$src/base:1" --to "$src/gib:1" >/dev/null
rm -rf "$work/big"

image_size() { skopeo inspect --raw --tls-verify=false "docker://$src/$1" | python3 -c 'import json,sys; m=json.load(sys.stdin); print(len(m["layers"]), m["config"]["size"] + sum(l["size"] for l in m["layers"]))'; }

tools=(layerup skopeo floor)
printf '%-6s %-5s %-20s %-20s %-20s %s\n' image case "layerup (s, MiB)" "skopeo (s, MiB)" "floor (s, MiB)" "layerup/floor"
for image in real gib; do
  read -r layers bytes <<<"$(image_size "$image:1")"
  for i in $(seq "$runs"); do
    for tool in "${tools[@]}"; do
      n=$((${n:-0} + 1))
      registry "dst$n" $((5400 + 2 * n))
      dst=$host
      for case in cold warm; do
        to="$dst/$tool/$image:1"
        if [ "$tool" = layerup ]; then
          measure "$work/$image-$case-$tool" "$layerup" -q copy "$src/$image:1" "$to"
        elif [ "$tool" = floor ]; then
          # The floor asks nothing first: warm, it would send everything again.
          [ "$case" = warm ] && continue
          measure "$work/$image-$case-$tool" benches/floor.sh "$src/$image:1" "$to"
        else
          measure "$work/$image-$case-$tool" skopeo copy -q --src-tls-verify=false --dest-tls-verify=false "docker://$src/$image:1" "docker://$to"
        fi
      done
      if [ "$tool" = layerup ] && [ "$i" = 1 ]; then
        a=$(skopeo inspect --tls-verify=false "docker://$to" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Digest"])')
        b=$(skopeo inspect --tls-verify=false "docker://$src/$image:1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Digest"])')
        [ "$a" = "$b" ] || { echo "$image: DIGEST DIFFERS $a $b"; exit 1; }
      fi
      kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'
      rm -rf "${work:?}/dst$n"
    done
  done
  for case in cold warm; do
    row=()
    for tool in "${tools[@]}"; do
      f="$work/$image-$case-$tool"
      if [ -s "$f" ]; then
        row+=("$(cut -d' ' -f1 "$f" | median) s, $(( $(cut -d' ' -f2 "$f" | median) / 1024 )) MiB")
      else
        row+=("-")
      fi
    done
    ratio=-
    [ "${row[2]}" = - ] || ratio=$(python3 -c "print(f'{float(\"${row[0]%% *}\") / float(\"${row[2]%% *}\"):.2f}x')")
    printf '%-6s %-5s %-20s %-20s %-20s %s\n' "$image" "$case" "${row[0]}" "${row[1]}" "${row[2]}" "$ratio"
  done
  echo "       ($layers layers, $((bytes / 1024 / 1024)) MiB moved cold, 0 warm; medians of $runs runs)"
done
echo "each layerup copy's digest equals the source's (checked on the first run of each image)"
echo "floor: curl, each blob streamed from the source into one upload (POST, PATCH, PUT), 4 at a time (its peak is one curl's)"
