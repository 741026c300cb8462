#!/usr/bin/env bash
# Starts a local Kubernetes control plane for tests: etcd, kube-apiserver and
# kube-controller-manager, on free ports of 127.0.0.1 only. No scheduler and
# no kubelet: pods are created but stay Pending, which is all a controller
# test needs. The flags follow envtest's (controller-runtime,
# pkg/internal/testing/controlplane) plus what a controller-manager needs.
#
# All state is under .e2e/ in the repository (or $VOLSNAP_E2E_DIR):
#   kubeconfig        admin credentials (client cert, group system:masters)
#   pki/              CA, serving cert, client certs, service-account keys
#   etcd/             etcd's data
#   logs/<name>.log   each process's output
#   pids/<name>.pid   what cluster-down.sh stops
#   env               the ports and URLs, as shell variables
# Each cluster-up starts from empty state; cluster-down.sh keeps the logs.
#
# Needs the binaries from build-control-plane.sh, openssl, curl and ss.
set -euo pipefail
# shellcheck source=tests/k8s/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

start=$SECONDS
# How long each component may take to become ready; generous because the
# API server's first start (CRD and RBAC bootstrap) is slow on 2 cores.
TIMEOUT=${VOLSNAP_K8S_START_TIMEOUT:-90}

for b in "$ETCD_BIN/etcd" "$K8S_BIN/kube-apiserver" "$K8S_BIN/kube-controller-manager" "$K8S_BIN/kubectl"; do
	[[ -x $b ]] || die "$b is missing: run tests/k8s/build-control-plane.sh (or make cluster-up)"
done
for c in openssl curl ss; do
	command -v "$c" >/dev/null 2>&1 || die "$c is needed (Debian: apt-get install openssl curl iproute2)"
done

PKI=$E2E_DIR/pki

# --- already running? -----------------------------------------------------------
running=()
for name in etcd kube-apiserver kube-controller-manager; do
	pid_alive "$name" && running+=("$name")
done
if ((${#running[@]} == 3)) && "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" get --raw /readyz >/dev/null 2>&1; then
	log "cluster already running (kubeconfig: $KUBECONFIG_FILE)"
	exit 0
elif ((${#running[@]} > 0)); then
	die "part of a cluster is running (${running[*]}) but it is not ready: run tests/k8s/cluster-down.sh first"
fi

# Fresh state: a test must not see objects a previous run left in etcd.
# Only what this script makes is removed, in case VOLSNAP_E2E_DIR points at
# a directory that holds anything else.
rm -rf "${E2E_DIR:?}"/{etcd,pki,logs,pids,apiserver-certs,kubeconfig,controller-manager.kubeconfig,env}
mkdir -p "$E2E_DIR" "$PKI" "$PIDS" "$LOGS" "$E2E_DIR/apiserver-certs"
# Private: the CA and service-account keys (etcd wants 700 for its data too;
# the kubeconfigs are made 600).
mkdir -m 700 "$E2E_DIR/etcd"
chmod 700 "$PKI"

# If anything below fails, stop what was started: no stray processes.
trap 'rc=$?; if ((rc != 0)); then log "cluster-up failed: stopping what it started"; bash "$K8S_SCRIPTS/cluster-down.sh" >&2 || true; fi' EXIT

# --- ports ---------------------------------------------------------------------
# Free ports below the kernel's ephemeral range (32768-60999 by default), so
# that an outgoing connection cannot take one between choosing and binding.
taken=" "
free_port() {
	local p
	for _ in $(seq 200); do
		p=$((20000 + RANDOM % 12000))
		[[ $taken == *" $p "* ]] && continue
		if [[ -z $(ss -Hltn "sport = :$p") ]]; then
			echo "$p"
			return 0
		fi
	done
	die "found no free port on 127.0.0.1"
}
ETCD_PORT=$(free_port)
taken+="$ETCD_PORT "
ETCD_PEER_PORT=$(free_port)
taken+="$ETCD_PEER_PORT "
APISERVER_PORT=$(free_port)
taken+="$APISERVER_PORT "
KCM_PORT=$(free_port)
ETCD_URL=http://127.0.0.1:$ETCD_PORT
APISERVER_URL=https://127.0.0.1:$APISERVER_PORT

# --- certificates and keys ---------------------------------------------------------
# One CA signs the API server's serving cert and the client certs; the API
# server trusts it for clients, and the controller-manager hands it to pods
# as the cluster's root CA (kube-root-ca.crt). EC keys: fast to generate.
t0=$SECONDS
ossl() {
	openssl "$@" 2>>"$LOGS/openssl.log" || {
		tail -n 10 "$LOGS/openssl.log" >&2
		die "openssl $1 failed"
	}
}
ossl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
	-keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 30 -subj "/CN=volsnap-e2e-ca"

# sign NAME SUBJECT [SAN]: a key and a cert signed by the CA (a client cert
# when no SAN is given).
sign() {
	local name=$1 subj=$2 san=${3-} ext=$PKI/$1.ext
	if [[ -n $san ]]; then
		printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$san" >"$ext"
	else
		printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >"$ext"
	fi
	ossl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
		-keyout "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subj"
	ossl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
		-CAcreateserial -days 30 -extfile "$ext" -out "$PKI/$name.crt"
	rm -f "$PKI/$name.csr" "$ext"
}
# The in-cluster names and the first service IP too, so a pod (or a client
# that uses the `kubernetes` service) could verify it.
sign apiserver "/CN=kube-apiserver" \
	"IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.0.0.1"
# Group system:masters: bound to cluster-admin by RBAC's bootstrap policy.
sign admin "/O=system:masters/CN=volsnap-e2e-admin"
# The user RBAC's bootstrap policy gives the controller-manager's permissions.
sign controller-manager "/CN=system:kube-controller-manager"
# Service-account token signing pair: the API server signs tokens it issues
# (TokenRequest, `kubectl create token`) with the private key and verifies
# tokens with the public key; the controller-manager needs the private key
# for the legacy token Secrets it still manages.
ossl genrsa -out "$PKI/sa.key" 2048
ossl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
chmod 600 "$PKI"/*.key
log "certificates and keys generated ($((SECONDS - t0))s)"

# kubeconfig FILE USER: credentials of a client cert made by sign().
kubeconfig() {
	local file=$1 user=$2
	cat >"$file" <<-KC
		apiVersion: v1
		kind: Config
		clusters:
		- name: volsnap-e2e
		  cluster:
		    server: $APISERVER_URL
		    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
		users:
		- name: $user
		  user:
		    client-certificate-data: $(base64 -w0 <"$PKI/$user.crt")
		    client-key-data: $(base64 -w0 <"$PKI/$user.key")
		contexts:
		- name: volsnap-e2e
		  context:
		    cluster: volsnap-e2e
		    user: $user
		current-context: volsnap-e2e
	KC
	chmod 600 "$file"
}
kubeconfig "$KUBECONFIG_FILE" admin
kubeconfig "$E2E_DIR/controller-manager.kubeconfig" controller-manager

# --- processes ----------------------------------------------------------------------
# start NAME BINARY ARGS...: in its own session (setsid), so it outlives this
# script and make, and Ctrl-C in the terminal that started it does not reach
# it; cluster-down.sh stops it by the pid recorded here.
start_process() {
	local name=$1 bin=$2
	shift 2
	setsid "$bin" "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
	echo $! >"$PIDS/$name.pid"
	# setsid execs the binary in place (it only forks when it is a process
	# group leader, which a background job of a script is not): $! is it.
	log "started $name (pid $!)"
}

# wait_ready NAME URL EXPECTED [curl args]: polls URL until it answers 200
# with EXPECTED in the body, failing early if the process exits, and after
# $TIMEOUT seconds.
wait_ready() {
	local name=$1 url=$2 expected=$3 t0=$SECONDS
	shift 3
	until [[ $(curl -fsS --max-time 5 "$@" "$url" 2>/dev/null) == *"$expected"* ]]; do
		if ! pid_alive "$name"; then
			tail -n 30 "$LOGS/$name.log" >&2
			die "$name exited before it was ready (log: $LOGS/$name.log)"
		fi
		if ((SECONDS - t0 >= TIMEOUT)); then
			tail -n 30 "$LOGS/$name.log" >&2
			curl -sS --max-time 5 "$@" "$url?verbose" >&2 || true
			die "$name not ready at $url after ${TIMEOUT}s (log: $LOGS/$name.log)"
		fi
		sleep 0.5
	done
	log "$name ready ($((SECONDS - t0))s)"
}

# etcd: plain HTTP on loopback, as envtest runs it. --unsafe-no-fsync is
# envtest's too: a test cluster's data need not survive a power cut, and
# fsyncs make the API server slow on a busy disk.
start_process etcd "$ETCD_BIN/etcd" \
	--name=e2e \
	--data-dir="$E2E_DIR/etcd" \
	--listen-client-urls="$ETCD_URL" \
	--advertise-client-urls="$ETCD_URL" \
	--listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
	--initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
	--initial-cluster="e2e=http://127.0.0.1:$ETCD_PEER_PORT" \
	--unsafe-no-fsync=true \
	--log-level=warn
wait_ready etcd "$ETCD_URL/health" '"health":"true"'

# Beyond envtest's flags:
# --tls-cert-file/--tls-private-key-file: a cert signed by our CA, so that
#   clients verify the server (envtest's is made the same way, in Go).
# --client-ca-file: client certs (admin, controller-manager) authenticate.
# ServiceAccount admission stays on (envtest turns it off because it runs no
#   controller-manager): here the controller-manager makes each namespace's
#   default ServiceAccount, and pods get their token volumes as in a cluster.
# --endpoint-reconciler-type=none: the `kubernetes` Service's Endpoints would
#   point at 127.0.0.1, which Endpoints validation refuses (an error every
#   10 s in the log); nothing here needs in-cluster access to the API server.
start_process kube-apiserver "$K8S_BIN/kube-apiserver" \
	--etcd-servers="$ETCD_URL" \
	--bind-address=127.0.0.1 \
	--advertise-address=127.0.0.1 \
	--secure-port="$APISERVER_PORT" \
	--cert-dir="$E2E_DIR/apiserver-certs" \
	--tls-cert-file="$PKI/apiserver.crt" \
	--tls-private-key-file="$PKI/apiserver.key" \
	--client-ca-file="$PKI/ca.crt" \
	--authorization-mode=RBAC \
	--service-account-issuer="$APISERVER_URL" \
	--service-account-key-file="$PKI/sa.pub" \
	--service-account-signing-key-file="$PKI/sa.key" \
	--service-cluster-ip-range=10.0.0.0/24 \
	--allow-privileged=true \
	--endpoint-reconciler-type=none \
	--profiling=false
wait_ready kube-apiserver "$APISERVER_URL/readyz" ok \
	--cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key"

# --use-service-account-credentials: each controller acts as its own
#   ServiceAccount (as in kubeadm clusters), so RBAC is exercised as for real.
# --service-account-private-key-file, --root-ca-file: it fills in token
#   Secrets (type kubernetes.io/service-account-token) and publishes the CA
#   into each namespace (ConfigMap kube-root-ca.crt).
# --cluster-signing-*: CertificateSigningRequests get signed by our CA.
# --authentication-skip-lookup: it would otherwise read a front-proxy CA that
#   this API server has none of (an error every few seconds in its log).
# --leader-elect=false: the only instance; no lease to wait for or lose.
start_process kube-controller-manager "$K8S_BIN/kube-controller-manager" \
	--kubeconfig="$E2E_DIR/controller-manager.kubeconfig" \
	--authentication-kubeconfig="$E2E_DIR/controller-manager.kubeconfig" \
	--authorization-kubeconfig="$E2E_DIR/controller-manager.kubeconfig" \
	--authentication-skip-lookup=true \
	--bind-address=127.0.0.1 \
	--secure-port="$KCM_PORT" \
	--leader-elect=false \
	--use-service-account-credentials=true \
	--service-account-private-key-file="$PKI/sa.key" \
	--root-ca-file="$PKI/ca.crt" \
	--cluster-signing-cert-file="$PKI/ca.crt" \
	--cluster-signing-key-file="$PKI/ca.key" \
	--profiling=false
# --insecure: its serving cert is self-signed in memory; only its health is read.
wait_ready kube-controller-manager "https://127.0.0.1:$KCM_PORT/healthz" ok --insecure

# The controller-manager creates each namespace's "default" ServiceAccount;
# until it has, pods cannot be created there (ServiceAccount admission).
t0=$SECONDS
until "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" -n default get serviceaccount default >/dev/null 2>&1; do
	((SECONDS - t0 < TIMEOUT)) || {
		tail -n 30 "$LOGS/kube-controller-manager.log" >&2
		die "the controller-manager created no default ServiceAccount in ${TIMEOUT}s"
	}
	sleep 0.5
done

cat >"$E2E_DIR/env" <<-ENV
	# Written by tests/k8s/cluster-up.sh: source it to reach the test cluster.
	export KUBECONFIG=$KUBECONFIG_FILE
	VOLSNAP_KUBECTL=$KUBECTL
	ETCD_URL=$ETCD_URL
	APISERVER_URL=$APISERVER_URL
	KCM_URL=https://127.0.0.1:$KCM_PORT
ENV
trap - EXIT
log "cluster up in $((SECONDS - start))s: $APISERVER_URL ($("$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -n1))"
log "use it with: export KUBECONFIG=$KUBECONFIG_FILE; kubectl=$KUBECTL"
