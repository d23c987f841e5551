#!/usr/bin/env bash
# The registry's own floor for a copy, with no client logic at all: every blob of SRC's manifest
# streamed with curl from the source registry into one upload on the destination (POST, one
# PATCH with the whole body, PUT), 4 at a time, then the manifest. What a copy cannot beat on
# this machine; benches/copy.sh runs it beside layerup and skopeo.
#
#   ./benches/floor.sh SRC_HOST/REPO:TAG DST_HOST/REPO:TAG
set -euo pipefail
src=$1 dst=$2
src_host=${src%%/*} rest=${src#*/}; src_repo=${rest%:*} tag=${rest##*:}
dst_host=${dst%%/*} rest=${dst#*/}; dst_repo=${rest%:*} dst_tag=${rest##*:}
accept='application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json'
manifest=$(mktemp)
trap 'rm -f "$manifest"' EXIT
type=$(curl -sf -H "Accept: $accept" -o "$manifest" -w '%{content_type}' "http://$src_host/v2/$src_repo/manifests/$tag")
one() { # one DIGEST: stream it from the source into one upload
  local loc
  loc=$(curl -sf -X POST -o /dev/null -w '%{redirect_url}' "http://$dst_host/v2/$dst_repo/blobs/uploads/")
  [ -n "$loc" ] || loc=$(curl -sf -X POST -D - -o /dev/null "http://$dst_host/v2/$dst_repo/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  loc=$(curl -sf "http://$src_host/v2/$src_repo/blobs/$1" | curl -sf -X PATCH -H 'Content-Type: application/octet-stream' -T - -D - -o /dev/null "$loc" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
  curl -sf -X PUT -o /dev/null "$loc${sep}digest=$1"
}
export -f one
export src_host src_repo dst_host dst_repo
python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); [print(b["digest"]) for b in [m["config"]]+m["layers"]]' "$manifest" \
  | xargs -P 4 -I{} bash -c 'one {}'
curl -sf -X PUT -H "Content-Type: ${type%%;*}" --data-binary @"$manifest" -o /dev/null "http://$dst_host/v2/$dst_repo/manifests/$dst_tag"
