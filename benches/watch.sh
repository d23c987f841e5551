#!/usr/bin/env bash
# Benchmark (not a test): the whole-app inner loop on a real node_modules tree (a fixed set of
# large npm packages, installed once into target/bench-npm: about 67,000 entries, 650 MB).
#
#   (a) edit → pushed under `layerup watch`: from the write to the reference on stdout
#   (b) a one-shot `layerup push` of a one-file edit
#   (c) `npm install` of one more package, pushed as a delta
#   (d) 10 images, one edit each at once, all pushed: under watch, as one `layerup push` of the
#       project, as 10 separate `layerup push` runs, and as 10 `umoci insert` + `skopeo copy`
#
# and, for (b) and (c), `umoci insert` + `skopeo copy` re-layering the same tree in the same run.
#
#   ./benches/watch.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-7}
for t in docker-registry skopeo umoci npm node python3 /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install -y docker-registry skopeo umoci time python3; npm comes with Node.js" >&2; exit 1; }
done
cache="$PWD/target/bench-npm"
if [ ! -d "$cache/node_modules" ]; then
  echo "installing the npm packages into $cache (once)" >&2
  mkdir -p "$cache"
  cat > "$cache/package.json" <<'JSON'
{ "private": true, "dependencies": {
  "next": "14.2.3", "react": "18.3.1", "react-dom": "18.3.1",
  "@mui/material": "5.15.20", "@mui/icons-material": "5.15.20",
  "@emotion/react": "11.11.4", "@emotion/styled": "11.11.5",
  "aws-sdk": "2.1640.0", "@aws-sdk/client-s3": "3.600.0", "jest": "29.7.0",
  "webpack": "5.92.0", "typescript": "5.4.5", "@babel/core": "7.24.7",
  "lodash": "4.17.21", "rxjs": "7.8.1" } }
JSON
  (cd "$cache" && npm install --no-audit --no-fund --legacy-peer-deps --ignore-scripts --silent)
fi
. benches/common.sh
registry registry 5500
reg=$host

busybox_base
skopeo copy -q --dest-tls-verify=false "oci:$work/layout:base" "docker://$reg/prod/base:1"
base="$reg/prod/base:1"

mkdir -p "$work/app"
cp -a "$cache/node_modules" "$cache/package.json" "$cache/package-lock.json" "$work/app/"
entries=$(find "$work/app/node_modules" | wc -l)
size=$(du -sm "$work/app/node_modules" | cut -f1)
edited="$work/app/node_modules/lodash/lodash.js"
push=("$layerup" push "$work/app/node_modules:/app/node_modules" --base "$base" --to "$reg/dev/nm:1"
      --squash-at 100000% --max-deltas 100000)

timed() { /usr/bin/time -f '%e %M' -o "$work/t" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }; tail -1 "$work/t"; }
sent() { sed -n 's/.*; \([0-9.]* [KMG]*i*B\) sent;.*/\1/p' "$work/err" | tail -1; }
umoci_push() { # umoci_push TREE TAG: re-layer TREE onto the base and push it; prints "seconds"
  umoci tag --image "$work/layout:base" "$2" >/dev/null
  local a b
  a=$(timed umoci insert --image "$work/layout:$2" "$1" "/app/${3:-node_modules}")
  b=$(timed skopeo copy -q --dest-tls-verify=false "oci:$work/layout:$2" "docker://$reg/dev/umoci:$2")
  python3 -c "print(f'{${a% *} + ${b% *}:.2f}')"
}

echo "tree: node_modules, $entries entries, $size MB; medians of $runs runs"
"${push[@]}" -q >/dev/null 2>&1   # the first push, full

# (a) under watch
watch=$(python3 benches/watch_edit.py "$runs" "$edited" -- "${push[@]/push/watch}")
echo "(a) edit → pushed under watch          layerup ${watch%% *} s   (runs: ${watch#* })"

# (b) one-shot
for i in $(seq "$runs"); do
  echo "// b $i" >> "$edited"
  timed "${push[@]}" | cut -d' ' -f1 >> "$work/b"
done
b_sent=$(sent)
b_peer=$(umoci_push "$work/app/node_modules" b)
echo "(b) one-shot push of a one-file edit   layerup $(median < "$work/b") s, $b_sent sent   umoci+skopeo $b_peer s"

# (c) npm install of one more package
(cd "$work/app" && npm install --no-audit --no-fund --legacy-peer-deps --ignore-scripts --silent dayjs@1.11.11)
added=$(find "$work/app/node_modules/dayjs" | wc -l)
c=$(timed "${push[@]}" | cut -d' ' -f1)
c_sent=$(sent)
c_peer=$(umoci_push "$work/app/node_modules" c)
echo "(c) npm install dayjs ($added entries)   layerup $c s, $c_sent sent            umoci+skopeo $c_peer s"

# (d) 10 images: each a service of its own (a copy of lodash: 1,000+ files), one edit each
mkdir -p "$work/shop"
{
  echo "base = \"$base\""
  echo "squash-at = \"100000%\""
  echo "max-deltas = 100000"
  for s in $(seq 10); do
    cp -a "$work/app/node_modules/lodash" "$work/shop/s$s"
    printf '[images.s%s]\nto = "%s/shop/s%s:dev"\nmappings = ["./s%s:/app/lib"]\n' "$s" "$reg" "$s" "$s"
  done
} > "$work/shop/layerup.toml"
files=()
for s in $(seq 10); do files+=("$work/shop/s$s/lodash.js"); done
(cd "$work/shop" && "$layerup" -q push >/dev/null)
d_watch=$(cd "$work/shop" && python3 "$OLDPWD/benches/watch_edit.py" "$runs" "${files[@]}" -- "$layerup" watch)
for i in $(seq "$runs"); do
  for f in "${files[@]}"; do echo "// d $i" >> "$f"; done
  (cd "$work/shop" && timed "$layerup" push) | cut -d' ' -f1 >> "$work/d-project"
  for f in "${files[@]}"; do echo "// e $i" >> "$f"; done
  start=$(date +%s.%N)
  for s in $(seq 10); do
    "$layerup" -q push "$work/shop/s$s:/app/lib" --base "$base" --to "$reg/shop/s$s:dev" \
      --squash-at 100000% --max-deltas 100000 >/dev/null
  done
  python3 -c "print(f'{$(date +%s.%N) - $start:.2f}')" >> "$work/d-separate"
done
start=$(date +%s.%N)
for s in $(seq 10); do umoci_push "$work/shop/s$s" "shop$s" lib >/dev/null; done
d_peer=$(python3 -c "print(f'{$(date +%s.%N) - $start:.2f}')")
echo "(d) 10 images, one edit each            watch ${d_watch%% *} s; one push of the project $(median < "$work/d-project") s;"
echo "                                        10 separate layerup push $(median < "$work/d-separate") s; 10 umoci+skopeo $d_peer s"
