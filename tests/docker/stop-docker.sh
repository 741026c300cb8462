#!/usr/bin/env bash
# stop-docker.sh: stop the dockerd that tests/docker/ensure-docker.sh started,
# found through its pidfile. Any other Docker daemon is left alone.
# Idempotent: with no such daemon running it only says so.
#
#   VOLSNAP_DOCKERD_PIDFILE  pidfile (/var/run/volsnap-dockerd.pid)
#   VOLSNAP_DOCKERD_STOP_TIMEOUT  seconds before SIGKILL (30)
set -euo pipefail

PIDFILE=${VOLSNAP_DOCKERD_PIDFILE:-/var/run/volsnap-dockerd.pid}
WAIT=${VOLSNAP_DOCKERD_STOP_TIMEOUT:-30}

say() { echo "stop-docker: $*"; }

if [ ! -f "$PIDFILE" ]; then
	say "no $PIDFILE: no dockerd of ours to stop"
	exit 0
fi
pid=$(cat "$PIDFILE" 2>/dev/null || true)
# is_dockerd PID: PID is a live (not zombie) dockerd.
is_dockerd() {
	local st
	st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ] &&
		[ "$(cat "/proc/$1/comm" 2>/dev/null)" = dockerd ]
}

if [ -z "$pid" ] || ! is_dockerd "$pid"; then
	say "pid '${pid}' from $PIDFILE is not a running dockerd: removing the stale pidfile"
	rm -f "$PIDFILE"
	exit 0
fi

# SIGTERM: dockerd stops its containers, its managed containerd, then exits
# and removes its pidfile.
say "stopping dockerd (pid $pid) with SIGTERM"
kill -TERM "$pid"
t0=$SECONDS
while is_dockerd "$pid"; do
	if [ $((SECONDS - t0)) -ge "$WAIT" ]; then
		say "dockerd (pid $pid) still running after $WAIT s: SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		sleep 1
		break
	fi
	sleep 0.5
done
rm -f "$PIDFILE"
say "dockerd (pid $pid) stopped after $((SECONDS - t0)) s"
