#!/usr/bin/env bash
# Sets the edc-ingest image, pinned by its digest, in the one place it is named three times: the
# migration Job (20-job-migrate.yaml) and the Deployment's init container and container
# (30-deployment.yaml), each line marked `# set-image.sh`. A digest names one build for good; a tag
# can be moved to another build under the running pods. scripts/check-deploy.sh refuses an image
# that is not pinned by digest, or an edc-ingest image that differs between the three.
#
# Usage: deploy/kubernetes/set-image.sh REPOSITORY[:TAG]@sha256:DIGEST
# The digest of an image you pushed, for example:
#   docker buildx build --push -t registry.example.org/edc-ingest:0.2.0 --metadata-file meta.json .
#   deploy/kubernetes/set-image.sh "registry.example.org/edc-ingest:0.2.0@$(jq -r '."containerimage.digest"' meta.json)"
# or, for an image already pushed: docker buildx imagetools inspect registry.example.org/edc-ingest:0.2.0
# (its Digest line), or crane digest registry.example.org/edc-ingest:0.2.0.
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")"

image=${1:-}
if ! [[ $image =~ ^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$ ]]; then
    echo "usage: $0 REPOSITORY[:TAG]@sha256:<64 hex digits> (an image pinned by its digest)" >&2
    exit 2
fi

files=(20-job-migrate.yaml 30-deployment.yaml)
marked=$(grep -c -E '^ *image: [^ ]+ # set-image\.sh$' "${files[@]}" | awk -F: '{ n += $2 } END { print n }')
if [ "$marked" != 3 ]; then
    echo "$0: expected 3 image lines marked '# set-image.sh' in ${files[*]}, found $marked" >&2
    exit 1
fi
sed -i -E "s#^( *image: )[^ ]+( \# set-image\.sh)\$#\1${image}\2#" "${files[@]}"
echo "image set to $image in ${files[*]} (3 lines)"
