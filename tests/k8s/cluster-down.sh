#!/usr/bin/env bash
# Stops the control plane that cluster-up.sh started, and only it: each
# process named by a pid file under .e2e/pids/ that still runs the binary
# cluster-up.sh started there. Safe to call when nothing runs, or twice.
# Keeps .e2e/ (logs, data, certs) for a look afterwards, all but .e2e/env;
# the next cluster-up.sh wipes it.
set -euo pipefail
# shellcheck source=tests/k8s/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

# How long a process may take to exit after SIGTERM before it gets SIGKILL.
GRACE=${VOLSNAP_K8S_STOP_GRACE:-15}

# Clients first, etcd last, so the API server does not spend its shutdown
# retrying a vanished etcd.
stopped=0
for name in kube-controller-manager kube-apiserver etcd; do
	if pid=$(pid_of "$name"); then
		kill -TERM "$pid" 2>/dev/null || true
		t0=$SECONDS
		while pid_alive "$name" && ((SECONDS - t0 < GRACE)); do sleep 0.2; done
		if pid_alive "$name"; then
			log "$name (pid $pid) still running ${GRACE}s after SIGTERM: SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			sleep 0.5
		fi
		pid_alive "$name" && die "could not stop $name (pid $pid)"
		log "stopped $name (pid $pid)"
		stopped=$((stopped + 1))
	fi
	rm -f "$PIDS/$name.pid"
done
# Its ports are no longer served: a script that sources it should not think so.
rm -f "$E2E_DIR/env"
((stopped > 0)) || log "no cluster running under $E2E_DIR"
