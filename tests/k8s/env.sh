# shellcheck shell=bash disable=SC2034 # variables are used by the scripts that source this
# Sourced by the tests/k8s scripts: the one place that names the versions
# and where binaries and cluster state live, so the scripts cannot disagree.

# The control plane the tests run against. kube-apiserver, controller-manager
# and kubectl are built from the same k8s.io/kubernetes release so that
# client and server versions match (the preinstalled kubectl is older).
K8S_VERSION=${VOLSNAP_K8S_VERSION:-v1.34.2}
# The etcd release that this Kubernetes release is tested with
# (hack/lib/etcd.sh in k8s.io/kubernetes v1.34.2 says 3.6.5).
ETCD_VERSION=${VOLSNAP_ETCD_VERSION:-v3.6.5}

# Binaries are cached outside the repository (they are ~300 MB and take
# ~10 minutes to build), keyed by version so a version bump rebuilds.
K8S_CACHE=${VOLSNAP_K8S_CACHE:-$HOME/.cache/volsnap/k8s}
K8S_BIN=$K8S_CACHE/$K8S_VERSION/bin
ETCD_BIN=$K8S_CACHE/etcd-$ETCD_VERSION/bin

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# All cluster state (data, certs, logs, pid files, kubeconfig) lives here;
# it is in .gitignore and cluster-down.sh leaves it for post-mortems.
E2E_DIR=${VOLSNAP_E2E_DIR:-$REPO_ROOT/.e2e}
KUBECONFIG_FILE=$E2E_DIR/kubeconfig
# The kubectl that matches the server, for scripts that source this file.
KUBECTL=$K8S_BIN/kubectl

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

K8S_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PIDS=$E2E_DIR/pids
LOGS=$E2E_DIR/logs

# pid_of NAME: the pid in NAME's pid file, if that pid still runs the
# process cluster-up.sh started: the binary NAME with this .e2e directory in
# its arguments. Pids get reused, and another checkout may run its own
# cluster from the same binaries; neither must be mistaken for ours.
pid_of() {
	local name=$1 pid exe
	[[ -r $PIDS/$name.pid ]] || return 1
	pid=$(<"$PIDS/$name.pid")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1 # gone, or a zombie
	[[ ${exe##*/} == "$name" ]] || return 1
	tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "$E2E_DIR/" || return 1
	echo "$pid"
}
pid_alive() { pid_of "$1" >/dev/null; }
