# Sourced by the benchmarks (not run alone): layerup built ($layerup), a temporary $work removed
# on exit with every process in $pids (layerup's state kept there), and helpers to start
# registries on loopback and to time commands.
cargo build --release --locked -q
layerup="$PWD/target/release/layerup"

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
export LAYERUP_STATE_DIR="$work/state"

free_port() { local p=$1; while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done; echo "$p"; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; exit 1; }
registry() { # registry NAME START_PORT: starts one on $work/NAME, sets $host (no subshell: $pids must see it)
  local port; port=$(free_port "$2")
  printf 'version: 0.1\nlog: { level: error, accesslog: { disabled: true } }\nstorage: { filesystem: { rootdirectory: %s/%s } }\nhttp: { addr: 127.0.0.1:%s, secret: bench }\n' "$work" "$1" "$port" > "$work/$1.yml"
  docker-registry serve "$work/$1.yml" >"$work/$1.log" 2>&1 &
  pids+=($!)
  wait_port "$port"
  host="127.0.0.1:$port"
}
measure() { # measure OUT CMD... : appends "seconds peak_kib" to OUT
  local out=$1; shift
  /usr/bin/time -f '%e %M' -o "$work/t" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" "$work/t" >&2; exit 1; }
  tail -1 "$work/t" >> "$out"
}
busybox_base() { # busybox_base [DIR...] : the layout $work/layout:base, made by umoci — busybox, then each DIR as a layer
  mkdir -p "$work/rootfs/bin"
  cp "$(command -v busybox)" "$work/rootfs/bin/busybox"
  umoci init --layout "$work/layout"
  umoci new --image "$work/layout:base"
  for d in "$work/rootfs" "$@"; do umoci insert --image "$work/layout:base" "$d" / >/dev/null; done
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
