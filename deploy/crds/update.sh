#!/usr/bin/env bash
# Copies the MCS CRDs from the sigs.k8s.io/mcs-api module, unchanged, into this
# directory. The About API's ClusterProperty CRD (about.k8s.io) is kept here by hand:
# its upstream module is not published as a Go module release.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=${MCS_API_VERSION:-v0.5.2}
dir=$(cd "$here/../../tests/k8s/etcd" && go mod download -json "sigs.k8s.io/mcs-api@$version" \
    | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
for crd in serviceexports serviceimports; do
    cp "$dir/config/crd/multicluster.x-k8s.io_$crd.yaml" "$here/multicluster.x-k8s.io_$crd.yaml"
    chmod 644 "$here/multicluster.x-k8s.io_$crd.yaml"
done
echo "copied the MCS CRDs of sigs.k8s.io/mcs-api $version" >&2
