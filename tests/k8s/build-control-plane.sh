#!/usr/bin/env bash
# Builds the binaries of a local Kubernetes control plane for the tests:
# etcd, kube-apiserver, kube-controller-manager and kubectl, from Go modules
# (the Go module proxy is the only source of Kubernetes code this machine can
# reach: no container registry, no release downloads).
#
# They land in a cache outside the repository, keyed by version:
#   $VOLSNAP_K8S_CACHE (default ~/.cache/volsnap/k8s)/<k8s version>/bin/
#   $VOLSNAP_K8S_CACHE/etcd-<etcd version>/bin/etcd
# When they are already there this returns at once. The first build takes
# about 10 minutes on 2 cores.
set -euo pipefail
# shellcheck source=tests/k8s/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

start=$SECONDS
K8S_BINARIES=(kube-apiserver kube-controller-manager kubectl)

have_all() {
	[[ -x $ETCD_BIN/etcd ]] || return 1
	local b
	for b in "${K8S_BINARIES[@]}"; do [[ -x $K8S_BIN/$b ]] || return 1; done
}
if have_all; then
	log "control plane $K8S_VERSION (etcd $ETCD_VERSION) already built in $K8S_CACHE ($((SECONDS - start))s)"
	exit 0
fi

# Go is needed only from here on: cached binaries run without it.
command -v go >/dev/null 2>&1 ||
	die "Go is not installed (or not on PATH): it is needed to build the control plane from source. Install Go >= 1.24 and retry."
log "building with $(go version)"
# Static binaries, as the upstream release builds them; no paths of this
# machine in them.
export CGO_ENABLED=0
SRC=$K8S_CACHE/src
mkdir -p "$SRC"

# Runs a build step with its output in a log file, printing the tail of the
# log if it fails (a Go build of Kubernetes prints a lot).
run_logged() {
	local logfile=$1
	shift
	if ! "$@" >"$logfile" 2>&1; then
		tail -n 40 "$logfile" >&2
		die "build step failed: $* (full log: $logfile)"
	fi
}

# --- etcd -------------------------------------------------------------------
# `go install go.etcd.io/etcd/server/v3@version` is refused because etcd's
# server/go.mod has replace directives; requiring the module from a
# throwaway module and building its main package works.
build_etcd() {
	local dir=$SRC/etcd-$ETCD_VERSION t0=$SECONDS
	[[ -x $ETCD_BIN/etcd ]] && return 0
	log "building etcd $ETCD_VERSION (under a minute the first time) ..."
	rm -rf "$dir" && mkdir -p "$dir" "$ETCD_BIN"
	cat >"$dir/go.mod" <<-MOD
		module volsnap.test/build-etcd

		go 1.24

		require go.etcd.io/etcd/server/v3 $ETCD_VERSION
	MOD
	# -mod=mod lets the build fill go.sum (the throwaway module has none).
	(cd "$dir" && run_logged "$dir/build.log" \
		go build -mod=mod -trimpath -ldflags '-s -w' -o "$ETCD_BIN/etcd.tmp" go.etcd.io/etcd/server/v3)
	# Renamed into place only when complete, so an interrupted build never
	# leaves a binary that the "already built" check would trust.
	mv "$ETCD_BIN/etcd.tmp" "$ETCD_BIN/etcd"
	log "etcd built in $((SECONDS - t0))s: $("$ETCD_BIN/etcd" --version | head -n1)"
}

# --- Kubernetes ---------------------------------------------------------------
# k8s.io/kubernetes cannot be built as a dependency as it is: its go.mod
# points every k8s.io/* staging module at ./staging/src/..., which only
# exists in its own repository. Those staging modules are published as
# v0.X.Y for Kubernetes v1.X.Y, so a throwaway module that requires
# k8s.io/kubernetes and replaces each of them with its v0.X.Y release builds
# the real commands.
build_kubernetes() {
	local dir=$SRC/kubernetes-$K8S_VERSION t0=$SECONDS
	local staging_version=v0.${K8S_VERSION#v1.}
	rm -rf "$dir" && mkdir -p "$dir" "$K8S_BIN"
	log "building kube-apiserver, kube-controller-manager, kubectl $K8S_VERSION (about 10 minutes on 2 cores the first time) ..."

	local modfile
	modfile=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
		sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
	[[ -f $modfile ]] || die "could not download k8s.io/kubernetes@$K8S_VERSION from the Go module proxy"

	cat >"$dir/go.mod" <<-MOD
		module volsnap.test/build-kubernetes

		go 1.24.0

		// As k8s.io/kubernetes' own go.mod: its code expects go1.24 defaults.
		godebug default=go1.24

		require k8s.io/kubernetes $K8S_VERSION
	MOD
	# Read the staging modules off kubernetes' own go.mod rather than listing
	# them here, so that a version bump picks up added or removed ones.
	local staging=() m
	mapfile -t staging < <(sed -n 's#^[[:space:]]*\(k8s.io/[^[:space:]]*\) => \./staging/.*#\1#p' "$modfile")
	((${#staging[@]} > 0)) || die "found no staging replace directives in $modfile"
	for m in "${staging[@]}"; do
		(cd "$dir" && go mod edit -replace="$m=$m@$staging_version")
	done
	log "pinned ${#staging[@]} k8s.io staging modules to $staging_version"

	# What the upstream build stamps (hack/lib/version.sh); without it the
	# binaries report v0.0.0-master, and kubectl warns about version skew.
	local major=${K8S_VERSION#v} minor
	minor=${major#*.}
	minor=${minor%%.*}
	major=${major%%.*}
	local ldflags="-s -w" pkg kv
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		for kv in "gitVersion=$K8S_VERSION" "gitMajor=$major" "gitMinor=$minor" \
			"gitTreeState=clean" "buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
			ldflags+=" -X $pkg.$kv"
		done
	done

	local out=$K8S_BIN/.tmp-build b
	rm -rf "$out" && mkdir -p "$out"
	# One `go build` for the three commands, so shared packages compile once.
	(cd "$dir" && run_logged "$dir/build.log" \
		go build -mod=mod -trimpath -ldflags "$ldflags" -o "$out/" \
		"${K8S_BINARIES[@]/#/k8s.io/kubernetes/cmd/}")
	for b in "${K8S_BINARIES[@]}"; do mv "$out/$b" "$K8S_BIN/$b"; done
	rmdir "$out"
	log "Kubernetes binaries built in $((SECONDS - t0))s: $("$K8S_BIN/kube-apiserver" --version)"
}

build_etcd
have_all || build_kubernetes
log "control plane ready in $K8S_CACHE ($((SECONDS - start))s in all)"
ls -l "$ETCD_BIN/etcd" "${K8S_BINARIES[@]/#/$K8S_BIN/}" >&2
