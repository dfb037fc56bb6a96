#!/usr/bin/env bash
# Builds the real control planes the tests run against, from Go modules, into a cache
# keyed by version, so a second run builds nothing.
#
#   tests/k8s/build.sh               build what the cache lacks, then print the bin dir
#                                    (the last line of standard output)
#   tests/k8s/build.sh --bin-dir     print the bin dir if everything is built, else exit 1
#   tests/k8s/build.sh --regenerate  rewrite kubernetes/go.mod from k8s.io/kubernetes's
#                                    own go.mod, then tidy every wrapper module
#   tests/k8s/build.sh --conformance build the MCS conformance suite if the cache lacks
#                                    it, then print the binary's path (last line)
#   tests/k8s/build.sh --conformance-path
#                                    print that path if it is built, else exit 1
#
# Each component has its own wrapper module (etcd/, kubernetes/, kwok/, coredns/,
# mcs-conformance/), so one module's dependency choices never change another's. The
# cache key of a component is its version plus a hash of its go.mod, go.sum and build
# flags (and, for the conformance suite, of the suite's source kept in the repository).
# The conformance suite is not a control-plane binary: it is built only when asked for,
# into its own cache directory, and does not change the bin dir.
#
# Environment: SHOAL_K8S_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/shoal/k8s).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${SHOAL_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/k8s}

KUBERNETES_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
COREDNS_VERSION=v1.14.7
# sigs.k8s.io/mcs-api/conformance, tag conformance/v0.5.0; its source is in
# mcs-conformance/upstream (the module proxy does not serve it; see UPSTREAM there).
MCS_CONFORMANCE_VERSION=v0.5.0

export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local

# component|version|module dir|package|binary name
components=(
    "etcd|$ETCD_VERSION|etcd|go.etcd.io/etcd/server/v3|etcd"
    "kubernetes|$KUBERNETES_VERSION|kubernetes|k8s.io/kubernetes/cmd/kube-apiserver|kube-apiserver"
    "kubernetes|$KUBERNETES_VERSION|kubernetes|k8s.io/kubernetes/cmd/kube-controller-manager|kube-controller-manager"
    "kubernetes|$KUBERNETES_VERSION|kubernetes|k8s.io/kubernetes/cmd/kube-scheduler|kube-scheduler"
    "kwok|$KWOK_VERSION|kwok|sigs.k8s.io/kwok/cmd/kwok|kwok"
    "coredns|$COREDNS_VERSION|coredns|github.com/coredns/coredns|coredns"
)

# The version ldflags of hack/lib/version.sh, so `kubectl version` shows the release.
kubernetes_ldflags() {
    local v=$KUBERNETES_VERSION major minor flags=() key val
    major=${v#v}; major=${major%%.*}
    minor=${v#v*.}; minor=${minor%%.*}
    for kv in "gitVersion=$v" "gitMajor=$major" "gitMinor=$minor" \
        "gitCommit=$v" "gitTreeState=clean" "buildDate=1970-01-01T00:00:00Z"; do
        key=${kv%%=*}; val=${kv#*=}
        flags+=("-X k8s.io/client-go/pkg/version.$key=$val"
            "-X k8s.io/component-base/version.$key=$val")
    done
    echo "-s -w ${flags[*]}"
}

ldflags_for() {
    case $1 in
        kubernetes) kubernetes_ldflags ;;
        *) echo "-s -w" ;;
    esac
}

component_dir() { # component version module-dir
    local key
    key=$(cat "$here/$3/go.mod" "$here/$3/go.sum" <(ldflags_for "$1") <(go env GOVERSION) \
        <(sources_of "$1") | sha256sum | cut -c1-12)
    echo "$cache/$1-$2-$key"
}

# What besides go.mod and go.sum goes into a component's binary from this repository:
# nothing for the control planes (their source comes from the module cache); the
# wrapper and the vendored upstream source for the conformance suite.
sources_of() {
    [ "$1" = mcs-conformance ] || return 0
    (cd "$here/mcs-conformance" && find . -type f ! -name '*.test' -print0 \
        | LC_ALL=C sort -z | xargs -0 sha256sum)
}

conformance_path() {
    echo "$(component_dir mcs-conformance "$MCS_CONFORMANCE_VERSION" mcs-conformance)/mcs-conformance.test"
}

# `go test -c` of the wrapper module, whose test imports the upstream suite.
build_conformance() {
    local bin out start=$SECONDS
    bin=$(conformance_path)
    out=$(dirname "$bin")
    if [ ! -x "$bin" ]; then
        echo "building mcs-conformance.test $MCS_CONFORMANCE_VERSION into $out" >&2
        mkdir -p "$out.tmp"
        (cd "$here/mcs-conformance" && go test -c -trimpath \
            -ldflags "$(ldflags_for mcs-conformance)" -o "$out.tmp/mcs-conformance.test" .)
        mkdir -p "$out"
        mv "$out.tmp/mcs-conformance.test" "$bin"
        rmdir "$out.tmp"
        echo "built mcs-conformance.test in $((SECONDS - start)) s" >&2
    fi
    echo "$bin"
}

bin_dir() {
    local key
    key=$(for c in "${components[@]}"; do
        IFS='|' read -r name version mod _ _ <<<"$c"
        component_dir "$name" "$version" "$mod"
    done | sort -u | sha256sum | cut -c1-12)
    echo "$cache/bin-$key"
}

link_bin_dir() {
    local dir; dir=$(bin_dir)
    mkdir -p "$dir"
    for c in "${components[@]}"; do
        IFS='|' read -r name version mod _ bin <<<"$c"
        ln -sfn "$(component_dir "$name" "$version" "$mod")/$bin" "$dir/$bin"
    done
    echo "$dir"
}

complete() {
    for c in "${components[@]}"; do
        IFS='|' read -r name version mod _ bin <<<"$c"
        [ -x "$(component_dir "$name" "$version" "$mod")/$bin" ] || return 1
    done
}

build() {
    local start=$SECONDS built=0
    for c in "${components[@]}"; do
        IFS='|' read -r name version mod pkg bin <<<"$c"
        local out; out=$(component_dir "$name" "$version" "$mod")
        [ -x "$out/$bin" ] && continue
        echo "building $bin $version into $out" >&2
        mkdir -p "$out.tmp"
        (cd "$here/$mod" && go build -trimpath -ldflags "$(ldflags_for "$name")" \
            -o "$out.tmp/$bin" "$pkg")
        mkdir -p "$out"
        mv "$out.tmp/$bin" "$out/$bin"
        rmdir "$out.tmp"
        built=$((built + 1))
    done
    echo "built $built binaries in $((SECONDS - start)) s" >&2
}

# Every staging module k8s.io/kubernetes replaces with ./staging/src/..., at the
# matching v0.x release, read from its own go.mod.
regenerate() {
    local gomod minor
    gomod=$(cd "$here/etcd" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" \
        | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
    minor=v0.${KUBERNETES_VERSION#v1.}
    {
        echo "// Generated by tests/k8s/build.sh --regenerate from k8s.io/kubernetes's go.mod."
        echo "module shoal.dev/tests/k8s/kubernetes"
        echo
        sed -n 's/^go \(.*\)$/go \1/p; s/^godebug \(.*\)$/godebug \1/p' "$gomod"
        echo
        for c in "${components[@]}"; do
            IFS='|' read -r name _ _ pkg _ <<<"$c"
            [ "$name" = kubernetes ] && echo "tool $pkg"
        done
        echo
        echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
        echo
        echo "replace ("
        sed -n 's#^\t\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*$#\t\1 => \1 '"$minor"'#p' "$gomod"
        echo ")"
    } >"$here/kubernetes/go.mod"
    echo "kubernetes/go.mod: $(grep -c ' => ' "$here/kubernetes/go.mod") staging replacements" >&2
    (cd "$here/etcd" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
    (cd "$here/kwok" && go get "sigs.k8s.io/kwok@$KWOK_VERSION")
    (cd "$here/coredns" && go get "github.com/coredns/coredns@$COREDNS_VERSION")
    for mod in etcd kubernetes kwok coredns mcs-conformance; do
        (cd "$here/$mod" && go mod tidy)
    done
}

case ${1:-} in
    --bin-dir)
        if complete; then link_bin_dir; else
            echo "the control planes are not built: run tests/k8s/build.sh" >&2
            exit 1
        fi ;;
    --regenerate) regenerate ;;
    --conformance)
        mkdir -p "$cache"
        exec 9>"$cache/.lock"
        flock 9
        build_conformance ;;
    --conformance-path)
        if [ -x "$(conformance_path)" ]; then conformance_path; else
            echo "the MCS conformance suite is not built: run tests/k8s/build.sh --conformance" >&2
            exit 1
        fi ;;
    "")
        # One build at a time (tests may ask for it at once); the cache makes the
        # second a no-op.
        mkdir -p "$cache"
        exec 9>"$cache/.lock"
        flock 9
        build; link_bin_dir ;;
    *) echo "usage: $0 [--bin-dir|--regenerate|--conformance|--conformance-path]" >&2; exit 2 ;;
esac
