#!/usr/bin/env bash
# Shoal end to end on three kind clusters, for a machine with Docker, kind and kubectl.
#
# THIS SCRIPT CANNOT RUN ON SHOAL'S DEVELOPMENT MACHINES (no container runtime, no
# images) AND IS NEVER COUNTED AS TESTED. The tests there run real control planes and
# stand-in processes instead (tests/tests/*). It is here for people with Docker.
#
# What it does, as a platform engineer would:
#  1. three kind clusters shoal-c0..c2 (a control plane and two workers each: the
#     StatefulSet's replicas need a node each), with distinct pod and Service ranges,
#     and routes between their nodes so pod IPs are routable across clusters (the
#     flat network);
#  2. builds the image (Dockerfile) and loads it into every cluster;
#  3. installs cert-manager (a pinned release);
#  4. installs Shoal from deploy/overlays/c<i> (with components/nodeport, node ports
#     pinned so that seeds are known in advance), makes the ClusterSet CA in c0 with
#     deploy/cert-manager/ca, copies it to c1 and c2, and exchanges the clusters'
#     certificates into each one's shoal-clusterset Secret; then CoreDNS (pinned,
#     1.12.2 or later) with `multicluster clusterset.local`;
#  5. checks what the end-to-end tests check: a Service exported from c0 and c1 is
#     imported in every cluster, `web.demo.svc.clusterset.local` answers from a
#     dnsutils pod, and once every node of c1 is stopped, c1's endpoints leave the
#     imports of c0 and c2.
#
#   tests/kind/run.sh            # everything, then deletes the clusters
#   KEEP=1 tests/kind/run.sh     # leaves them running (kind delete clusters shoal-c0 shoal-c1 shoal-c2)
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
CLUSTERS=(c0 c1 c2)
CERT_MANAGER_VERSION=${CERT_MANAGER_VERSION:-v1.21.1}
COREDNS_IMAGE=${COREDNS_IMAGE:-registry.k8s.io/coredns/coredns:v1.12.2}
IMAGE=${IMAGE:-shoal:dev}
# Longest wait for any one condition, in seconds.
WAIT_MAX=${WAIT_MAX:-300}
work=$(mktemp -d)

log() { printf '\n== %s\n' "$*" >&2; }
k() { local c=$1; shift; kubectl --context "kind-shoal-$c" "$@"; }

cleanup() {
    rm -rf "$work"
    if [[ -z "${KEEP:-}" ]]; then
        kind delete clusters shoal-c0 shoal-c1 shoal-c2 >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

# until DESCRIPTION COMMAND...: retries COMMAND every 2 s for at most WAIT_MAX seconds.
until_ok() {
    local what=$1; shift
    local deadline=$((SECONDS + WAIT_MAX))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            echo "timed out after ${WAIT_MAX}s: $what" >&2
            return 1
        fi
        sleep 2
    done
}

create_clusters() {
    local i
    for i in "${!CLUSTERS[@]}"; do
        log "kind cluster shoal-${CLUSTERS[$i]}"
        kind create cluster --name "shoal-${CLUSTERS[$i]}" --config - <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  podSubnet: 10.$((10 + i)).0.0/16
  serviceSubnet: 10.$((96 + i)).0.0/16
nodes:
  - role: control-plane
  - role: worker
  - role: worker
EOF
    done
}

# The flat network: every node routes every other cluster's node pod ranges to that node.
route_pod_ranges() {
    log "routes between the clusters' pod ranges"
    local c node other line cidr ip
    for c in "${CLUSTERS[@]}"; do
        for other in "${CLUSTERS[@]}"; do
            [[ $other == "$c" ]] && continue
            while read -r line; do
                cidr=${line% *}
                ip=${line#* }
                for node in $(kind get nodes --name "shoal-$c"); do
                    docker exec "$node" ip route replace "$cidr" via "$ip"
                done
            done < <(k "$other" get nodes -o jsonpath='{range .items[*]}{.spec.podCIDR} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}')
        done
    done
}

load_image() {
    log "building $IMAGE"
    docker build -t "$IMAGE" "$repo"
    local c
    for c in "${CLUSTERS[@]}"; do
        kind load docker-image "$IMAGE" --name "shoal-$c"
    done
}

install_cert_manager() {
    local c
    for c in "${CLUSTERS[@]}"; do
        log "cert-manager $CERT_MANAGER_VERSION in $c"
        k "$c" apply -f "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
    done
    for c in "${CLUSTERS[@]}"; do
        k "$c" -n cert-manager wait --for=condition=Available deployment --all --timeout="${WAIT_MAX}s"
    done
}

# CoreDNS serving clusterset.local from ServiceImports (its kubernetes plugin, 1.12.2+).
configure_coredns() {
    local c
    for c in "${CLUSTERS[@]}"; do
        log "CoreDNS with multicluster clusterset.local in $c"
        k "$c" -n kube-system get configmap coredns -o jsonpath='{.data.Corefile}' >"$work/Corefile"
        if ! grep -q 'multicluster clusterset.local' "$work/Corefile"; then
            sed -i 's/kubernetes cluster.local in-addr.arpa ip6.arpa {/kubernetes cluster.local clusterset.local in-addr.arpa ip6.arpa {\n       multicluster clusterset.local/' "$work/Corefile"
        fi
        k "$c" -n kube-system create configmap coredns --from-file=Corefile="$work/Corefile" \
            --dry-run=client -o yaml | k "$c" apply -f -
        k "$c" -n kube-system set image deployment/coredns coredns="$COREDNS_IMAGE"
        k "$c" apply -f - <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: coredns-multicluster
rules:
  - apiGroups: ["multicluster.x-k8s.io"]
    resources: ["serviceimports"]
    verbs: ["list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: coredns-multicluster
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: coredns-multicluster
subjects:
  - kind: ServiceAccount
    name: coredns
    namespace: kube-system
EOF
        k "$c" -n kube-system rollout restart deployment/coredns
        k "$c" -n kube-system rollout status deployment/coredns --timeout="${WAIT_MAX}s"
    done
}

# The worker that the seeds name for cluster $1 (its first worker's address).
seed_host() {
    k "$1" get nodes -l '!node-role.kubernetes.io/control-plane' \
        -o jsonpath='{.items[0].status.addresses[?(@.type=="InternalIP")].address}'
}

# An overlay of the repository's overlay: NodePort QUIC Services on pinned ports
# (30946 for replica 0, 30947 for replica 1), the image, and seeds naming the other
# clusters' workers on those ports.
write_overlay() {
    local c=$1 dir="$work/overlay-$1" other
    mkdir -p "$dir"
    local rel
    rel=$(realpath --relative-to="$dir" "$repo/deploy")
    awk '/^\[\[seeds\]\]/{skip=1} /^\[tls\]/{skip=0} !skip' "$repo/deploy/overlays/$c/shoal.toml" >"$dir/shoal.toml"
    for other in "${CLUSTERS[@]}"; do
        [[ $other == "$c" ]] && continue
        local host
        host=$(seed_host "$other")
        for replica in 0 1; do
            printf '[[seeds]]\ncluster = "%s"\nreplica = %s\naddr = "%s:%s"\n\n' \
                "$other" "$replica" "$host" "$((30946 + replica))" >>"$dir/seeds.toml"
        done
    done
    # Seeds before [tls]: the tables after them would otherwise swallow the keys.
    awk -v seeds="$dir/seeds.toml" '/^\[tls\]/{while ((getline l < seeds) > 0) print l} {print}' \
        "$dir/shoal.toml" >"$dir/shoal.toml.new"
    mv "$dir/shoal.toml.new" "$dir/shoal.toml"
    cat >"$dir/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $rel/overlays/$c
components:
  - $rel/components/nodeport
images:
  - name: shoal:dev
    newName: ${IMAGE%:*}
    newTag: ${IMAGE##*:}
configMapGenerator:
  - name: shoal-config
    namespace: shoal-system
    behavior: replace
    files:
      - shoal.toml
patches:
  - target: {kind: Service, name: shoal-quic-0}
    patch: '[{"op": "add", "path": "/spec/ports/0/nodePort", "value": 30946}]'
  - target: {kind: Service, name: shoal-quic-1}
    patch: '[{"op": "add", "path": "/spec/ports/0/nodePort", "value": 30947}]'
EOF
}

secret_file() { # CLUSTER SECRET KEY FILE
    k "$1" -n shoal-system get secret "$2" -o "jsonpath={.data.${3//./\\.}}" | base64 -d >"$4"
}

install_shoal() {
    local c
    for c in "${CLUSTERS[@]}"; do
        log "Shoal in $c"
        write_overlay "$c"
        k "$c" apply -k "$work/overlay-$c"
    done
    log "the ClusterSet CA, made in c0 and copied to c1 and c2"
    k c0 apply -k "$repo/deploy/cert-manager/ca"
    k c0 -n shoal-system wait --for=condition=Ready certificate/shoal-clusterset-ca --timeout="${WAIT_MAX}s"
    for key in tls.crt tls.key ca.crt; do
        secret_file c0 shoal-clusterset-ca "$key" "$work/ca-$key"
    done
    for c in c1 c2; do
        k "$c" -n shoal-system create secret generic shoal-clusterset-ca --type=kubernetes.io/tls \
            --from-file=tls.crt="$work/ca-tls.crt" --from-file=tls.key="$work/ca-tls.key" \
            --from-file=ca.crt="$work/ca-ca.crt" --dry-run=client -o yaml | k "$c" apply -f -
    done
    log "every cluster's certificate into every cluster's shoal-clusterset"
    local from=()
    for c in "${CLUSTERS[@]}"; do
        k "$c" -n shoal-system wait --for=condition=Ready certificate/shoal --timeout="${WAIT_MAX}s"
        secret_file "$c" shoal-tls tls.crt "$work/$c.crt"
        from+=(--from-file="$c.crt=$work/$c.crt")
    done
    for c in "${CLUSTERS[@]}"; do
        k "$c" -n shoal-system create secret generic shoal-clusterset "${from[@]}" \
            --from-file=ca.crt="$work/ca-ca.crt" --dry-run=client -o yaml | k "$c" apply -f -
    done
    for c in "${CLUSTERS[@]}"; do
        k "$c" -n shoal-system rollout status statefulset/shoal --timeout="${WAIT_MAX}s"
    done
}

export_web() {
    local c
    for c in "${CLUSTERS[@]}"; do
        k "$c" create namespace demo --dry-run=client -o yaml | k "$c" apply -f -
    done
    for c in c0 c1; do
        log "web exported from $c"
        k "$c" -n demo apply -f - <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: registry.k8s.io/e2e-test-images/agnhost:2.53
          args: ["netexec", "--http-port=8080"]
          ports: [{containerPort: 8080, name: http}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata:
  name: web
EOF
    done
}

# The number of endpoints in cluster $1's imported slices of web from cluster $2.
imported_from() {
    k "$1" -n demo get endpointslices \
        -l "multicluster.kubernetes.io/service-name=web,multicluster.kubernetes.io/source-cluster=$2" \
        -o jsonpath='{range .items[*].endpoints[*]}x{end}' | tr -cd x | wc -c
}
has_import_from() { (($(imported_from "$1" "$2") > 0)); }
no_import_from() { (($(imported_from "$1" "$2") == 0)); }

check_imports() {
    local c origin
    for c in "${CLUSTERS[@]}"; do
        until_ok "ServiceImport web in $c" k "$c" -n demo get serviceimport web
        for origin in c0 c1; do
            until_ok "$c imports web's endpoints from $origin" has_import_from "$c" "$origin"
        done
        echo "$c imports web from c0 and c1" >&2
    done
}

dns_answers() { # CLUSTER
    [[ -n $(k "$1" -n demo exec dnsutils -- dig +short web.demo.svc.clusterset.local) ]]
}

check_dns() {
    local c
    for c in "${CLUSTERS[@]}"; do
        k "$c" -n demo run dnsutils --image=registry.k8s.io/e2e-test-images/jessie-dnsutils:1.3 \
            --restart=Never --command -- sleep infinity
        k "$c" -n demo wait --for=condition=Ready pod/dnsutils --timeout="${WAIT_MAX}s"
        until_ok "web.demo.svc.clusterset.local in $c" dns_answers "$c"
        echo "$c: web.demo.svc.clusterset.local -> $(k "$c" -n demo exec dnsutils -- dig +short web.demo.svc.clusterset.local | tr '\n' ' ')" >&2
    done
}

check_withdrawal() {
    log "stopping every node of c1"
    local node
    for node in $(kind get nodes --name shoal-c1); do
        docker stop "$node" >/dev/null
    done
    for c in c0 c2; do
        until_ok "$c withdraws c1's endpoints" no_import_from "$c" c1
        has_import_from "$c" c0 || { echo "$c lost c0's endpoints too" >&2; return 1; }
        echo "$c withdrew c1 and keeps c0" >&2
    done
}

create_clusters
route_pod_ranges
load_image
install_cert_manager
install_shoal
configure_coredns   # after the ServiceImport CRD, which CoreDNS then lists
export_web
check_imports
check_dns
check_withdrawal
log "all checks passed"
