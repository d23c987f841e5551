#!/usr/bin/env bash
# Benchmark (not a test): what each --compression costs and saves. For a rebuilt binary (layerup's
# own release build, 27 MB, a real Rust executable) and a source tree (Python's standard library),
# layerup writes the full layer with gzip and with zstd at several levels (into an OCI layout, so
# no network is timed), RUNS times each; beside it, in the same run, the zstd and gzip command-line
# tools compress the same tar (`zstd -N -T0`, every core, as layerup; `gzip -5`, one core). For each: CPU-bound layer time, bytes, and
# what a push of it costs at 20 and 100 Mbit/s (layer time + bytes / link rate).
#
#   ./benches/compression.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
for t in umoci busybox zstd gzip jq; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install -y umoci busybox-static zstd gzip jq" >&2; exit 1; }
done
. benches/common.sh
busybox_base

binary_dir="$work/binary"; mkdir -p "$binary_dir"; cp "$layerup" "$binary_dir/app"
# Debian's Python standard library (no site-packages): a tree of source text.
stdlib=${TREE:-/usr/lib/python3.11}
levels="gzip zstd:1 zstd:3 zstd:6 zstd:9 zstd:12 zstd:15"

row() { # row NAME SECONDS BYTES
  awk -v n="$1" -v s="$2" -v b="$3" 'BEGIN {
    printf "  %-22s %6.2f s %9.2f MB %8.2f s %8.2f s\n", n, s, b / 1e6, s + b * 8 / 20e6, s + b * 8 / 100e6 }'
}

for input in "$binary_dir" "$stdlib"; do
  tar -C "$input" -cf "$work/plain.tar" .
  echo "$(basename "$input"): $(du -sb "$input" | cut -f1) bytes, tar $(stat -c %s "$work/plain.tar") bytes; medians of $runs"
  printf '  %-22s %8s %12s %10s %10s\n' "" "layer" "size" "@20Mbit" "@100Mbit"
  for c in $levels; do
    : > "$work/times"
    for i in $(seq "$runs"); do
      "$layerup" -q push "$input:/app" --base "oci:$work/layout:base" --to "oci:$work/out:$i" \
        --full --compression "$c" --json > "$work/doc.json"
      jq -r '.timings_ms.layer / 1000' "$work/doc.json" >> "$work/times"
    done
    bytes=$(jq -r '.new_layers as $n | [.blobs[] | select(.digest as $d | $n | index($d)) | .size] | add' "$work/doc.json")
    row "layerup $c" "$(median < "$work/times")" "$bytes"
    rm -rf "$work/out"
  done
  for tool in "gzip -5" "zstd -3 -T0" "zstd -9 -T0" "zstd -19 -T0"; do
    : > "$work/times"
    for i in $(seq "$runs"); do
      /usr/bin/time -f '%e' -o "$work/t" sh -c "$tool -c < '$work/plain.tar' > '$work/out.bin'"
      cat "$work/t" >> "$work/times"
    done
    row "$tool (CLI)" "$(median < "$work/times")" "$(stat -c %s "$work/out.bin")"
  done
  echo
done
