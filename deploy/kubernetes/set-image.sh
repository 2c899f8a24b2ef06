#!/usr/bin/env bash
# Sets the edc-ingest image of one overlay, pinned by its digest: the `images:` entry named
# edc-ingest in overlays/OVERLAY/kustomization.yaml, which Kustomize writes into the migration Job,
# the Deployment's init container and its container at once. A digest names one build for good; a
# tag can be moved to another build under the running pods. scripts/check-deploy.sh refuses an
# image that is not pinned by digest. (kubectl has no `kustomize edit set image`; with the
# standalone kustomize, `kustomize edit set image edc-ingest=REPO:TAG@sha256:...` does the same.)
#
# Usage: deploy/kubernetes/set-image.sh OVERLAY REPOSITORY[:TAG]@sha256:DIGEST
#   OVERLAY: a folder name under deploy/kubernetes/overlays/ (production, minimal, ...)
# The digest of an image you pushed, for example:
#   docker buildx build --push -t registry.example.org/edc-ingest:0.2.0 --metadata-file meta.json .
#   deploy/kubernetes/set-image.sh production "registry.example.org/edc-ingest:0.2.0@$(jq -r '."containerimage.digest"' meta.json)"
# or, for an image already pushed: docker buildx imagetools inspect registry.example.org/edc-ingest:0.2.0
# (its Digest line), or crane digest registry.example.org/edc-ingest:0.2.0.
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")"

usage() {
    echo "usage: $0 OVERLAY REPOSITORY[:TAG]@sha256:<64 hex digits> (an image pinned by its digest)" >&2
    exit 2
}

overlay=${1:-}
image=${2:-}
[ -n "$overlay" ] && [ -f "overlays/$overlay/kustomization.yaml" ] || usage
[[ $image =~ ^([a-z0-9][a-z0-9._/:-]*)@(sha256:[0-9a-f]{64})$ ]] || usage
reference=${BASH_REMATCH[1]}
digest=${BASH_REMATCH[2]}
# A tag is what follows the last colon after the last slash (a registry's port is before it).
name=$reference
tag=
last=${reference##*/}
if [[ $last == *:* ]]; then
    tag=${last##*:}
    name=${reference%:*}
fi

file=overlays/$overlay/kustomization.yaml
# Rewrites the entry `- name: edc-ingest` of the images list: its newName, newTag (dropped without
# a tag) and digest lines, whatever their order, and nothing else.
awk -v name="$name" -v tag="$tag" -v digest="$digest" '
    function flush() {
        if (!inside) return
        print indent "newName: " name
        if (tag != "") print indent "newTag: " tag
        print indent "digest: " digest
        inside = 0; done = 1
    }
    /^[[:space:]]*- name: edc-ingest[[:space:]]*$/ && !done {
        print; inside = 1
        match($0, /^[[:space:]]*/); indent = substr($0, 1, RLENGTH) "  "
        next
    }
    inside && $0 ~ "^" indent "(newName|newTag|digest):" { next }
    inside { flush() }
    { print }
    END { flush(); if (!done) exit 3 }
' "$file" >"$file.new" || {
    rm -f "$file.new"
    echo "$0: no images entry \`- name: edc-ingest\` in $file" >&2
    exit 1
}
mv "$file.new" "$file"
echo "image set to $name${tag:+:$tag}@$digest in $file"
