#!/usr/bin/env bash
# Stops the test cluster's kube-apiserver, keeps it down for DOWN seconds
# (default 3: the outage the tests want clients to live through), and starts
# it again with exactly the arguments it ran with, then waits until it is
# ready. etcd keeps the data, so the objects are still there afterwards.
#   tests/k8s/restart-apiserver.sh [DOWN]
set -euo pipefail
# shellcheck source=tests/k8s/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

DOWN=${1:-3}
pid=$(pid_of kube-apiserver) || die "no kube-apiserver of this cluster runs (make cluster-up)"
mapfile -d '' args <"/proc/$pid/cmdline"
# A graceful stop can take a minute while watches drain; an outage is what
# the tests want, so after 5 s it is killed (as a crash would).
kill -TERM "$pid"
t0=$SECONDS
while pid_alive kube-apiserver; do
	((SECONDS - t0 < 5)) || kill -KILL "$pid" 2>/dev/null || true
	((SECONDS - t0 < 30)) || die "kube-apiserver (pid $pid) did not stop within 30s"
	sleep 0.2
done
log "stopped kube-apiserver (pid $pid); down for ${DOWN}s"
sleep "$DOWN"
setsid "${args[@]}" >>"$LOGS/kube-apiserver.log" 2>&1 </dev/null &
echo $! >"$PIDS/kube-apiserver.pid"
source "$E2E_DIR/env"
PKI=$E2E_DIR/pki
t0=$SECONDS
until [[ $(curl -fsS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$APISERVER_URL/readyz" 2>/dev/null) == ok ]]; do
	pid_alive kube-apiserver || die "kube-apiserver exited while starting again (log: $LOGS/kube-apiserver.log)"
	((SECONDS - t0 < 60)) || die "kube-apiserver not ready 60s after its restart"
	sleep 0.5
done
log "kube-apiserver ready again (pid $!)"
