#!/usr/bin/env bash
# Benchmark (not a test): push a large real tree as a new layer on a base image, layerup against
# `umoci insert` + `skopeo copy` doing the same job, in the same run, on one loopback registry.
#
#   ./benches/push.sh [TREE] [RUNS]
#
# TREE defaults to this machine's Python standard library (thousands of files, 250+ MB). Each
# run edits one file first, so every run builds and uploads a full new layer for both tools;
# both destinations hold the base layers already, so only the new layer, config and manifest move.
# Prints wall time and peak RSS per run (GNU time) and the median, plus the pushed layer sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
# python3 is used below; it must not write .pyc files into the tree being measured.
export PYTHONDONTWRITEBYTECODE=1
tree_src=${1:-$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')}
runs=${2:-3}
for t in docker-registry skopeo umoci /usr/bin/time busybox taskset bc; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install -y docker-registry skopeo umoci time busybox-static" >&2; exit 1; }
done
. benches/setup.sh

echo "tree: $tree_src — $files files, $size MB; $runs runs; registry $reg (loopback)"
echo
printf '%-5s %-28s %-40s\n' run "layerup push (s, MiB)" "umoci insert + skopeo copy (s, MiB)"
for i in $(seq "$runs"); do
  echo "# run $i" >> "$work/tree/os.py"
  : > "$work/l"; : > "$work/u1"; : > "$work/u2"
  measure "$work/l" "$layerup" -q push "$work/tree:/app" --base "$reg/prod/base:1" --to "$reg/dev/layerup:run$i"
  umoci tag --image "$work/layout:base" "run$i"
  measure "$work/u1" umoci insert --image "$work/layout:run$i" "$work/tree" /app
  measure "$work/u2" skopeo copy -q --dest-tls-verify=false "oci:$work/layout:run$i" "docker://$reg/dev/umoci:run$i"
  read -r ls lk < "$work/l"; read -r u1s u1k < "$work/u1"; read -r u2s u2k < "$work/u2"
  us=$(echo "$u1s + $u2s" | bc); uk=$(( u1k > u2k ? u1k : u2k ))
  printf '%-5s %-28s %-40s\n' "$i" "$ls s, $((lk / 1024)) MiB" "$us s ($u1s + $u2s), $((uk / 1024)) MiB"
  echo "$ls $lk $us $uk" >> "$work/all"
done
echo
echo "median wall: layerup $(cut -d' ' -f1 "$work/all" | median) s, umoci+skopeo $(cut -d' ' -f3 "$work/all" | median) s"
echo "median peak RSS: layerup $(( $(cut -d' ' -f2 "$work/all" | median) / 1024 )) MiB, umoci+skopeo $(( $(cut -d' ' -f4 "$work/all" | median) / 1024 )) MiB"
# The added layers: everything above the base's two (layerup splits a large tree into parts).
added() { skopeo inspect --raw --tls-verify=false "docker://$reg/$1" | python3 -c 'import json,sys; print(sum(l["size"] for l in json.load(sys.stdin)["layers"][2:]))'; }
lsize=$(added "dev/layerup:run$runs")
usize=$(added "dev/umoci:run$runs")
one_core=$(taskset -c 0 "$layerup" -q push "$work/tree:/app" --base "$reg/prod/base:1" --to "$reg/dev/layerup:one-core")
all_cores=$(skopeo inspect --tls-verify=false "docker://$reg/dev/layerup:run$runs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Digest"])')
[ "${one_core#*@}" = "$all_cores" ] && same=yes || same=NO
echo "same digest on 1 core and on $(nproc) cores: $same (${one_core#*@})"
echo "added layers: layerup $((lsize / 1024 / 1024)) MiB ($lsize B), umoci $((usize / 1024 / 1024)) MiB ($usize B)"
