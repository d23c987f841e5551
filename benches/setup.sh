# Sourced by the benchmarks (not run alone). Given $tree_src, sets up in a temporary $work,
# removed on exit with every process in $pids: layerup built ($layerup, its state in $work), a
# registry on loopback ($reg, $port), the tree copied to $work/tree ($files files, $size MB), and
# the base image — busybox and a release file, two layers made by umoci — in the registry as
# prod/base:1 and in the layout $work/layout:base for umoci; dev/layerup and dev/umoci already
# hold its layers.
cargo build --release --locked -q
layerup="$PWD/target/release/layerup"

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
export LAYERUP_STATE_DIR="$work/state"

free_port() { local p=$1; while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done; echo "$p"; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; exit 1; }
port=$(free_port 5100)
reg="127.0.0.1:$port"
printf 'version: 0.1\nlog: { level: error, accesslog: { disabled: true } }\nstorage: { filesystem: { rootdirectory: %s/registry } }\nhttp: { addr: %s, secret: bench }\n' "$work" "$reg" > "$work/registry.yml"
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
wait_port "$port"

# The tree, copied so runs can edit it (site-packages left out: it is not part of the stdlib).
mkdir -p "$work/tree"
tar -C "$tree_src" --exclude=./site-packages -cf - . | tar -C "$work/tree" -xf -
files=$(find "$work/tree" -type f | wc -l)
size=$(du -sm "$work/tree" | cut -f1)

mkdir -p "$work/rootfs/bin" "$work/rel/etc"
cp "$(command -v busybox)" "$work/rootfs/bin/busybox"
echo prod > "$work/rel/etc/prod-release"
umoci init --layout "$work/layout"
umoci new --image "$work/layout:base"
umoci insert --image "$work/layout:base" "$work/rootfs" / >/dev/null
umoci insert --image "$work/layout:base" "$work/rel" / >/dev/null
for r in prod/base:1 dev/layerup:seed dev/umoci:seed; do
  skopeo copy -q --dest-tls-verify=false "oci:$work/layout:base" "docker://$reg/$r"
done
