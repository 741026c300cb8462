#!/usr/bin/env bash
# Smoke check of a running test cluster (tests/k8s/cluster-up.sh): shows the
# control plane does what a volsnap controller test will lean on.
#   - the CRDs install and their schema and CEL rules are enforced
#   - a ServiceAccount token from `kubectl create token` is accepted, and
#     RBAC applies to it
#   - the controller-manager binds a hostPath PV to a PVC, and scales a
#     Deployment's (Pending: no scheduler, no kubelet) pods up and down
# Works in a namespace of its own and removes it (and its PV) at the end,
# so it can run again on the same cluster.
set -euo pipefail
# shellcheck source=tests/k8s/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

start=$SECONDS
WAIT=${VOLSNAP_SMOKE_TIMEOUT:-60s}
[[ -r $KUBECONFIG_FILE ]] || die "no $KUBECONFIG_FILE: start the cluster first (make cluster-up)"
[[ -x $KUBECTL ]] || die "no $KUBECTL: run tests/k8s/build-control-plane.sh"
k() { "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
step() { log "smoke: $*"; }
fail() { die "smoke: $*"; }

k version >/dev/null || fail "the API server does not answer (is the cluster up?)"
ns=volsnap-smoke-$(date +%s)-$$
pv=$ns-pv
cleanup() {
	k delete namespace "$ns" --ignore-not-found --wait=false >/dev/null 2>&1 || true
	k delete pv "$pv" --ignore-not-found --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT
k create namespace "$ns" >/dev/null

step "apply the CRDs and wait until they are Established"
k apply -f "$REPO_ROOT/crds/" >/dev/null
k wait --for=condition=Established --timeout="$WAIT" -f "$REPO_ROOT/crds/" >/dev/null

step "a VolumeSnapshot with two sources is rejected by the server"
if out=$(k apply -n "$ns" -f - 2>&1 <<-YAML
	apiVersion: volsnap.dev/v1alpha1
	kind: VolumeSnapshot
	metadata: {name: two-sources}
	spec:
	  source:
	    paths: [{name: data, path: /srv/data}]
	    container: web
YAML
); then
	fail "the server accepted a VolumeSnapshot with two sources: $out"
fi
[[ $out == *"exactly one of paths, container, volume, persistentVolumeClaim, archive must be set"* ]] ||
	fail "rejected, but not by the CEL rule: $out"

step "a VolumeSnapshot that breaks the schema (unknown compression) is rejected"
if out=$(k apply -n "$ns" -f - 2>&1 <<-YAML
	apiVersion: volsnap.dev/v1alpha1
	kind: VolumeSnapshot
	metadata: {name: bad-compression}
	spec:
	  source: {persistentVolumeClaim: data}
	  compression: brotli
YAML
); then
	fail "the server accepted compression: brotli: $out"
fi
[[ $out == *"Unsupported value"* ]] || fail "rejected, but not by the schema's enum: $out"

step "a valid VolumeSnapshot is accepted, defaulted, and listed by its short name"
k apply -n "$ns" -f - >/dev/null <<-YAML
	apiVersion: volsnap.dev/v1alpha1
	kind: VolumeSnapshot
	metadata: {name: app-data}
	spec:
	  source: {persistentVolumeClaim: app-data}
YAML
listed=$(k get vsnap -n "$ns" -o name)
[[ $listed == volumesnapshot.volsnap.dev/app-data ]] || fail "kubectl get vsnap printed: $listed"
compression=$(k get vsnap app-data -n "$ns" -o jsonpath='{.spec.compression}')
[[ $compression == gzip ]] || fail "spec.compression was not defaulted to gzip: '$compression'"
if out=$(k patch vsnap app-data -n "$ns" --type=merge -p '{"spec":{"compression":"zstd"}}' 2>&1); then
	fail "the server let spec change: $out"
fi
[[ $out == *"spec is immutable"* ]] || fail "spec change rejected, but not by the CEL transition rule: $out"

step "a token from \`kubectl create token\` is accepted, with RBAC applied"
k create serviceaccount smoke -n "$ns" >/dev/null
token=$(k create token smoke -n "$ns" --duration=10m)
[[ -n $token ]] || fail "kubectl create token printed nothing"
# A kubeconfig-less client with only the token: the admin client cert in
# .e2e/kubeconfig would otherwise authenticate the request instead.
kt() {
	"$KUBECTL" --kubeconfig=/dev/null --server="$(k config view --raw -o jsonpath='{.clusters[0].cluster.server}')" \
		--certificate-authority="$E2E_DIR/pki/ca.crt" --token="$token" "$@"
}
who=$(kt auth whoami -o jsonpath='{.status.userInfo.username}') || fail "the API server refused the token"
[[ $who == "system:serviceaccount:$ns:smoke" ]] || fail "the token authenticated as '$who'"
kt auth can-i --list -n "$ns" >/dev/null || fail "auth can-i --list with the token failed"
[[ $(kt auth can-i list secrets -n "$ns" 2>/dev/null || true) == no ]] ||
	fail "a ServiceAccount without any role may list secrets: RBAC is not enforced"
# What a pod would use to verify the API server: published by the
# controller-manager (--root-ca-file) into every namespace.
t0=$SECONDS
until k get configmap kube-root-ca.crt -n "$ns" >/dev/null 2>&1; do
	((SECONDS - t0 < 60)) || fail "no ConfigMap kube-root-ca.crt in $ns"
	sleep 0.5
done

step "the controller-manager binds a hostPath PV to a PVC"
# Matched by a label, which binds at once. (A PV pre-bound with claimRef
# waits for the binder's next periodic sync: up to 15 s.)
k apply -f - >/dev/null <<-YAML
	apiVersion: v1
	kind: PersistentVolume
	metadata: {name: $pv, labels: {volsnap-smoke: $ns}}
	spec:
	  capacity: {storage: 1Gi}
	  accessModes: [ReadWriteOnce]
	  persistentVolumeReclaimPolicy: Retain
	  storageClassName: ""
	  hostPath: {path: /tmp/$pv}
YAML
k apply -n "$ns" -f - >/dev/null <<-YAML
	apiVersion: v1
	kind: PersistentVolumeClaim
	metadata: {name: app-data}
	spec:
	  accessModes: [ReadWriteOnce]
	  storageClassName: ""
	  selector: {matchLabels: {volsnap-smoke: $ns}}
	  resources: {requests: {storage: 1Gi}}
YAML
k wait -n "$ns" --for=jsonpath='{.status.phase}'=Bound --timeout="$WAIT" pvc/app-data >/dev/null ||
	fail "the PVC did not become Bound"
bound=$(k get pvc app-data -n "$ns" -o jsonpath='{.spec.volumeName}')
[[ $bound == "$pv" ]] || fail "the PVC is bound to '$bound', not $pv"

step "a Deployment gets 2 (Pending) pods, and loses them when scaled to 0"
# The namespace's "default" ServiceAccount, which the pods run as, is made
# by the controller-manager; pods are refused until it exists.
t0=$SECONDS
until k get serviceaccount default -n "$ns" >/dev/null 2>&1; do
	((SECONDS - t0 < 60)) || fail "no default ServiceAccount in $ns"
	sleep 0.5
done
k apply -n "$ns" -f - >/dev/null <<-YAML
	apiVersion: apps/v1
	kind: Deployment
	metadata: {name: app}
	spec:
	  replicas: 2
	  selector: {matchLabels: {app: smoke}}
	  template:
	    metadata: {labels: {app: smoke}}
	    spec:
	      containers:
	      - name: app
	        image: registry.k8s.io/pause:3.10 # never pulled: there is no kubelet
	        volumeMounts: [{name: data, mountPath: /data}]
	      volumes:
	      - name: data
	        persistentVolumeClaim: {claimName: app-data}
YAML
pods() { k get pods -n "$ns" -l app=smoke -o name | wc -l; }
t0=$SECONDS
until (($(pods) == 2)); do
	((SECONDS - t0 < 60)) || fail "expected 2 pods, have $(pods)"
	sleep 0.5
done
phases=$(k get pods -n "$ns" -l app=smoke -o jsonpath='{.items[*].status.phase}')
[[ $phases == "Pending Pending" ]] || fail "pods are not Pending: $phases"
k scale deployment app -n "$ns" --replicas=0 >/dev/null
k wait -n "$ns" --for=delete pod -l app=smoke --timeout="$WAIT" >/dev/null
(($(pods) == 0)) || fail "pods left after scaling to 0: $(pods)"

log "smoke: all checks passed in $((SECONDS - start))s"
