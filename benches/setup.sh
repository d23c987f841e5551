# Sourced by the tree benchmarks (not run alone). Given $tree_src, sets up (with common.sh's
# $work, $layerup and helpers) a registry on loopback ($reg), the tree copied to $work/tree
# ($files files, $size MB), and the base image — busybox and a release file, two layers made by umoci — in the registry as
# prod/base:1 and in the layout $work/layout:base for umoci; dev/layerup and dev/umoci already
# hold its layers.
. benches/common.sh
registry registry 5100
reg=$host

# The tree, copied so runs can edit it (site-packages left out: it is not part of the stdlib).
mkdir -p "$work/tree"
tar -C "$tree_src" --exclude=./site-packages -cf - . | tar -C "$work/tree" -xf -
files=$(find "$work/tree" -type f | wc -l)
size=$(du -sm "$work/tree" | cut -f1)

mkdir -p "$work/rel/etc"
echo prod > "$work/rel/etc/prod-release"
busybox_base "$work/rel"
for r in prod/base:1 dev/layerup:seed dev/umoci:seed; do
  skopeo copy -q --dest-tls-verify=false "oci:$work/layout:base" "docker://$reg/$r"
done
