#!/usr/bin/env bash
# Benchmark (not a test): the inner loop. On a large real tree, wall time and bytes for
#   (a) the first push, (b) a one-file edit, (c) a 100-file edit, (d) nothing changed,
#   (e) a one-file edit in a 100,000-file tree, (f) the same through the change journal,
# and (b) and (d) again through a slow link (20 Mbit/s, 20 ms each way: benches/pace.py), next to
# `umoci insert` + `skopeo copy` re-layering the same tree onto the same base in the same run.
#
#   ./benches/delta.sh [TREE] [RUNS]
#
# TREE defaults to this machine's Python standard library. Times are medians of RUNS (3);
# the slow-link peer runs once (it sends the whole layer: tens of seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONDONTWRITEBYTECODE=1
tree_src=${1:-$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')}
runs=${2:-3}
for t in docker-registry skopeo umoci /usr/bin/time python3 bc; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install -y docker-registry skopeo umoci time python3 bc" >&2; exit 1; }
done
. benches/setup.sh
reg_port=${reg##*:}
slow_port=$(free_port $((reg_port + 1)))
slow="127.0.0.1:$slow_port"
echo "0 0" > "$work/counts"
python3 benches/pace.py "$slow_port" "$reg_port" 20000000 20 "$work/counts" &
pids+=($!)
wait_port "$slow_port"

python3 - "$work/huge" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(1000):
    os.makedirs(f"{root}/mod{d:04d}")
    for f in range(100):
        with open(f"{root}/mod{d:04d}/f{f:03d}.py", "w") as fh:
            fh.write(f"# module {d} file {f}\nX = {d * f}\n" * 3)
PY

timed() { # timed CMD... : prints "seconds peak_kib"
  /usr/bin/time -f '%e %M' -o "$work/t" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  tail -1 "$work/t"
}
sent() { sed -n 's/.*; \([0-9.]* [KMG]*i*B\) sent;.*/\1/p' "$work/err" | tail -1; }
lpush() { # lpush TREE TAG [REGISTRY]
  timed "$layerup" push "$1:/app" --base "$reg/prod/base:1" --to "${3:-$reg}/dev/layerup:$2" --insecure
}
umoci_push() { # umoci_push TREE TAG [REGISTRY] : re-layer the whole tree onto the base, push
  local n=$2 to=${3:-$reg} a b
  umoci tag --image "$work/layout:base" "$n" >/dev/null
  a=$(timed umoci insert --image "$work/layout:$n" "$1" /app)
  b=$(timed skopeo copy -q --dest-tls-verify=false "oci:$work/layout:$n" "docker://$to/dev/umoci:$n")
  echo "$(printf '%.2f' "$(echo "${a% *} + ${b% *}" | bc)") $(( ${a#* } > ${b#* } ? ${a#* } : ${b#* } ))"
}
layer_bytes() { skopeo inspect --raw --tls-verify=false "docker://$reg/dev/umoci:$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["layers"][-1]["size"])'; }

echo "tree: $tree_src — $files files, $size MB; 100,000-file tree: $(du -sm "$work/huge" | cut -f1) MB; median of $runs runs"
printf '%-34s %-30s %-30s\n' case "layerup (s, peak MiB, sent)" "umoci+skopeo (s, peak MiB, layer)"
row() { printf '%-34s %-30s %-30s\n' "$1" "$2" "$3"; }
fmt() { echo "$1 s, $(( $2 / 1024 )) MiB"; }

read -r s k <<<"$(lpush "$work/tree" dev)"; l_sent=$(sent)
read -r us uk <<<"$(umoci_push "$work/tree" a)"
row "(a) first push" "$(fmt "$s" "$k"), $l_sent" "$(fmt "$us" "$uk"), $(layer_bytes a) B"

case_b() { # case_b TAG NAME EDIT
  local tag=$1 name=$2 edit=$3 i ls=() lk=() us=() uk=() last_sent=""
  for i in $(seq "$runs"); do
    eval "$edit"
    read -r s k <<<"$(lpush "$work/tree" dev)"; ls+=("$s"); lk+=("$k"); last_sent=$(sent)
    read -r s k <<<"$(umoci_push "$work/tree" "$tag$i")"; us+=("$s"); uk+=("$k")
  done
  row "$name" "$(fmt "$(printf '%s\n' "${ls[@]}" | median)" "$(printf '%s\n' "${lk[@]}" | median)"), $last_sent" \
    "$(fmt "$(printf '%s\n' "${us[@]}" | median)" "$(printf '%s\n' "${uk[@]}" | median)"), $(layer_bytes "$tag$runs") B"
}
case_b b "(b) one-file edit" 'echo "# edit $i" >> "$work/tree/os.py"'
find "$work/tree" -name "*.py" | sort > "$work/py-files"
head -100 "$work/py-files" > "$work/hundred"
case_b c "(c) 100-file edit" 'while read -r f; do echo "# edit $i" >> "$f"; done < "$work/hundred"'
case_b d "(d) nothing changed" ':'

lpush "$work/huge" huge >/dev/null
ls=(); lk=()
for i in $(seq "$runs"); do
  echo "# edit $i" >> "$work/huge/mod0500/f050.py"
  read -r s k <<<"$(lpush "$work/huge" huge)"; ls+=("$s"); lk+=("$k"); e_sent=$(sent)
done
read -r us uk <<<"$(umoci_push "$work/huge" e)"
row "(e) 100,000 files, one-file edit" "$(fmt "$(printf '%s\n' "${ls[@]}" | median)" "$(printf '%s\n' "${lk[@]}" | median)"), $e_sent" "$(fmt "$us" "$uk"), $(layer_bytes e) B"

# (f) the same through the change journal (--journal): the first push starts its watcher and
# walks; the edits after it read what the journal names. The watcher stops itself after 10
# quiet minutes; it is ended here, by the pid file it keeps in the state.
lpush_j() { timed "$layerup" push "$1:/app" --base "$reg/prod/base:1" --to "$reg/dev/layerup:$2" --insecure --journal -v; }
lpush_j "$work/huge" journal >/dev/null
for f in "$work"/state/journal/*/pid; do pids+=("$(cat "$f")"); done
echo "# journal" >> "$work/huge/mod0500/f050.py"
lpush_j "$work/huge" journal >/dev/null
ls=(); lk=()
for i in $(seq "$runs"); do
  echo "# edit j$i" >> "$work/huge/mod0500/f050.py"
  read -r s k <<<"$(lpush_j "$work/huge" journal)"; ls+=("$s"); lk+=("$k")
  grep -q "change journal names" "$work/err" || { echo "(f) walked: $(cat "$work/err")" >&2; exit 1; }
done
row "(f) (e) with --journal" "$(fmt "$(printf '%s\n' "${ls[@]}" | median)" "$(printf '%s\n' "${lk[@]}" | median)")" ""

# (b) through the slow link: layerup's state is per destination, so the first push through the
# link (to the same repository) is full; the edits after it are deltas. The proxy writes its
# byte counts when a connection closes: give it a moment after each push.
counted() { sleep 0.5; read -r up _ < "$work/counts"; echo "$up"; }
lpush "$work/tree" slow "$slow" >/dev/null
ls=(); up=()
for i in $(seq "$runs"); do
  echo "# slow $i" >> "$work/tree/os.py"
  before=$(counted)
  read -r s k <<<"$(lpush "$work/tree" slow "$slow")"; ls+=("$s")
  up+=($(($(counted) - before)))
done
before=$(counted)
read -r us uk <<<"$(umoci_push "$work/tree" slow "$slow")"
row "(b) one-file edit, 20 Mbit/s+20ms" "$(printf '%s\n' "${ls[@]}" | median) s, $(printf '%s\n' "${up[@]}" | median) B up" "$us s, $(($(counted) - before)) B up"
# (d) through the slow link: nothing new. The upload sessions a push opens ahead (on the
# last push's word that a delta is coming) are cancelled here: one round trip more.
ls=()
for i in $(seq "$runs"); do
  read -r s k <<<"$(lpush "$work/tree" slow "$slow")"; ls+=("$s")
done
row "(d) nothing changed, 20 Mbit/s+20ms" "$(printf '%s\n' "${ls[@]}" | median) s" ""
