#!/usr/bin/env bash
# ensure-docker.sh: make sure a working Docker Engine answers on this machine,
# for volsnap's end-to-end tests. Idempotent: safe to run again and again.
#
#   1. If a daemon already answers (`docker version`), use it as it is.
#   2. Otherwise, as root with apt-get: install Debian's docker.io when
#      dockerd is missing, then start dockerd in the background with flags that
#      work inside a sandbox/container (see DOCKERD FLAGS below) and poll until
#      it answers (VOLSNAP_DOCKERD_TIMEOUT seconds, default 60).
#   3. Build the local test image volsnap-test:busybox FROM scratch out of
#      Debian's busybox-static (never pulls anything); skipped when present.
#   4. Verify: run, bind mount, named volume, pause/unpause/stop/start.
#
# The dockerd it starts keeps running afterwards; tests/docker/stop-docker.sh
# stops it (and only it, through its pidfile).
#
# Exit status: 0 ready; 1 failed (the tail of the dockerd log is printed);
# 2 no daemon answers and this script can't start one (not root / no apt-get /
# remote DOCKER_HOST) - callers may treat 2 as "skip the docker tests".
#
# Environment (all optional):
#   VOLSNAP_TEST_IMAGE              image tag to build   (volsnap-test:busybox)
#   VOLSNAP_DOCKERD_PIDFILE         pidfile of our dockerd (/var/run/volsnap-dockerd.pid)
#   VOLSNAP_DOCKERD_LOG             dockerd log file     (/var/log/volsnap-dockerd.log)
#   VOLSNAP_DOCKERD_DATA_ROOT       dockerd --data-root  (/var/lib/docker)
#   VOLSNAP_DOCKERD_EXEC_ROOT       dockerd --exec-root  (/var/run/docker with the
#                                   default data root and socket, else a
#                                   /var/run/volsnap-docker-HASH of its own: two
#                                   daemons must never share one)
#   VOLSNAP_DOCKERD_STORAGE_DRIVER  overlay2 | vfs | ... (auto: overlay2 if an
#                                   overlay mount works there, else vfs)
#   VOLSNAP_DOCKERD_TIMEOUT         seconds to wait for the daemon (60)
#   VOLSNAP_DOCKER_SKIP_VERIFY=1    skip step 4
#   VOLSNAP_DOCKER_REQUIRE_PAUSE=1  make a failing `docker pause` fatal
#                                   (default: a loud warning)
set -euo pipefail

IMAGE=${VOLSNAP_TEST_IMAGE:-volsnap-test:busybox}
PIDFILE=${VOLSNAP_DOCKERD_PIDFILE:-/var/run/volsnap-dockerd.pid}
LOG=${VOLSNAP_DOCKERD_LOG:-/var/log/volsnap-dockerd.log}
DATA_ROOT=${VOLSNAP_DOCKERD_DATA_ROOT:-/var/lib/docker}
STORAGE_DRIVER=${VOLSNAP_DOCKERD_STORAGE_DRIVER:-}
TIMEOUT=${VOLSNAP_DOCKERD_TIMEOUT:-60}
EXEC_ROOT=${VOLSNAP_DOCKERD_EXEC_ROOT:-}
LOCKFILE=/var/lock/volsnap-ensure-docker.lock
START=$SECONDS

say() { echo "ensure-docker: $*"; }
warn() { echo "ensure-docker: WARNING: $*" >&2; }
die() {
	local code=$1
	shift
	echo "ensure-docker: ERROR: $*" >&2
	exit "$code"
}

# ---------------------------------------------------------------- helpers ---

# Temp files and test objects, removed on any exit.
CLEAN_DIRS=()
CLEAN_CONTAINERS=()
CLEAN_VOLUMES=()
POLICY_RC_CREATED=""
cleanup() {
	local c v d
	for c in "${CLEAN_CONTAINERS[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
	for v in "${CLEAN_VOLUMES[@]}"; do docker volume rm -f "$v" >/dev/null 2>&1 || true; done
	for d in "${CLEAN_DIRS[@]}"; do rm -rf "$d"; done
	if [ -n "$POLICY_RC_CREATED" ]; then rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

# docker_answers: the daemon answers `docker version` within 5 s.
docker_answers() {
	command -v docker >/dev/null 2>&1 &&
		timeout 5 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

server_summary() {
	docker version --format \
		'Docker Engine {{.Server.Version}} (API {{.Server.APIVersion}}, minimum API {{.Server.MinAPIVersion}}), client {{.Client.Version}}' \
		2>/dev/null || echo "Docker Engine (version unknown)"
	docker info --format 'storage driver {{.Driver}}, cgroup driver {{.CgroupDriver}} (cgroup v{{.CgroupVersion}}), root dir {{.DockerRootDir}}' 2>/dev/null || true
}

log_tail() {
	if [ -f "$LOG" ]; then
		echo "---- last 40 lines of $LOG ----" >&2
		tail -n 40 "$LOG" >&2
		echo "---- end of $LOG ----" >&2
	fi
}

# alive PID: the process exists and is not a zombie (a killed dockerd can
# linger as a zombie until pid 1 reaps it; `kill -0` says yes to those).
alive() {
	local st
	st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# pid_is PID NAME: process PID is alive and its command name is NAME.
pid_is() {
	[ -n "$1" ] && alive "$1" && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]
}

# The socket we would serve: DOCKER_HOST when it is a unix socket, else the default.
socket_path() {
	case "${DOCKER_HOST:-}" in
	"") echo /var/run/docker.sock ;;
	unix://*) echo "${DOCKER_HOST#unix://}" ;;
	*) return 1 ;;
	esac
}

APT_UPDATED=""
apt_install() {
	export DEBIAN_FRONTEND=noninteractive
	if [ -z "$APT_UPDATED" ]; then
		say "apt-get update"
		apt-get update -qq
		APT_UPDATED=1
	fi
	# Packages' maintainer scripts must not start services (docker.io would
	# try `invoke-rc.d docker start` with default flags). Container images
	# usually ship a policy-rc.d that says so; add one only for this install.
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		POLICY_RC_CREATED=1
	fi
	say "apt-get install --no-install-recommends $*"
	apt-get install -y -qq --no-install-recommends "$@" >/dev/null
	if [ -n "$POLICY_RC_CREATED" ]; then
		rm -f /usr/sbin/policy-rc.d
		POLICY_RC_CREATED=""
	fi
}

pkg_installed() {
	[ "$(dpkg-query -W -f '${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

can_install() {
	[ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1
}

# overlay_works DIR: a kernel overlay mount can be made on DIR's filesystem.
overlay_works() {
	local p rc=1
	p=$(mktemp -d "$1/.volsnap-overlay-probe.XXXXXX") || return 1
	mkdir -p "$p/l" "$p/u" "$p/w" "$p/m"
	if mount -t overlay overlay -o "lowerdir=$p/l,upperdir=$p/u,workdir=$p/w" "$p/m" 2>/dev/null; then
		umount "$p/m" && rc=0
	fi
	rm -rf "$p"
	return $rc
}

# ------------------------------------------------------ 1. daemon answers ---

{ exec 9>"$LOCKFILE"; } 2>/dev/null || exec 9>"/tmp/volsnap-ensure-docker.lock"
if ! flock -w 600 9; then die 1 "another ensure-docker.sh holds the lock for 10 minutes"; fi

if docker_answers; then
	say "Docker daemon already answers: $(docker version --format '{{.Server.Version}}')"
else
	# ------------------------------------------- 2. install and start ---
	SOCK=$(socket_path) || die 2 "DOCKER_HOST=$DOCKER_HOST does not answer and is not a local unix socket: cannot start a daemon for it"
	if ! can_install; then
		die 2 "no Docker daemon answers and this script needs root and apt-get to start one (uid=$(id -u))"
	fi

	if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
		say "dockerd or docker missing: installing Debian's docker.io (with containerd, runc, tini, iptables)"
		t0=$SECONDS
		pkgs=(docker.io)
		# busybox-static for step 3, in the same apt-get run (unless a
		# conflicting dynamic busybox is installed: see step 3).
		if ! pkg_installed busybox-static && ! pkg_installed busybox; then
			pkgs+=(busybox-static)
		fi
		apt_install "${pkgs[@]}"
		say "installed ${pkgs[*]} in $((SECONDS - t0)) s"
	fi
	hash -r

	# A dockerd of ours that is still starting (or hung): wait for it, never
	# start a second one on the same data root.
	ourpid=""
	if [ -f "$PIDFILE" ]; then
		ourpid=$(cat "$PIDFILE" 2>/dev/null || true)
		if pid_is "$ourpid" dockerd; then
			say "dockerd (pid $ourpid, from $PIDFILE) is running but not answering yet: waiting for it"
		else
			say "removing stale pidfile $PIDFILE (pid ${ourpid:-?} is gone)"
			rm -f "$PIDFILE"
			ourpid=""
		fi
	fi
	if [ -z "$ourpid" ]; then
		other=""
		for p in $(pgrep -x dockerd 2>/dev/null || true); do
			if pid_is "$p" dockerd; then other="$other $p"; fi # zombies don't count
		done
		other=${other# }
		if [ -n "$other" ]; then
			warn "another dockerd (pid $other) runs but does not answer on $SOCK; starting ours anyway"
		fi
		# After a hard kill, dockerd's managed containerd may have left its
		# pidfile; dockerd adopts whatever process has that pid, so drop the
		# file when that pid is no longer a containerd.
		if [ -z "$EXEC_ROOT" ]; then
			if [ "$SOCK" = /var/run/docker.sock ] && [ "$DATA_ROOT" = /var/lib/docker ]; then
				EXEC_ROOT=/var/run/docker
			else
				EXEC_ROOT=/var/run/volsnap-docker-$(printf '%s' "$SOCK $DATA_ROOT" | md5sum | cut -c1-8)
			fi
		fi
		cpid_file=$EXEC_ROOT/containerd/containerd.pid
		if [ -f "$cpid_file" ] && ! pid_is "$(cat "$cpid_file" 2>/dev/null)" containerd; then
			rm -f "$cpid_file"
		fi
		if [ -S "$SOCK" ]; then rm -f "$SOCK"; fi

		if [ ! -d /sys/fs/cgroup/memory ] && [ ! -f /sys/fs/cgroup/cgroup.controllers ]; then
			say "no cgroup hierarchy under /sys/fs/cgroup: mounting cgroup2"
			mkdir -p /sys/fs/cgroup
			mount -t cgroup2 cgroup2 /sys/fs/cgroup || warn "could not mount cgroup2; dockerd will probably fail"
		fi

		mkdir -p "$DATA_ROOT" "$(dirname "$LOG")" "$(dirname "$PIDFILE")"
		if [ -z "$STORAGE_DRIVER" ]; then
			if overlay_works "$DATA_ROOT"; then STORAGE_DRIVER=overlay2; else STORAGE_DRIVER=vfs; fi
			say "storage driver: $STORAGE_DRIVER (auto: kernel overlay mount on $DATA_ROOT $([ "$STORAGE_DRIVER" = overlay2 ] && echo works || echo fails))"
		fi

		# DOCKERD FLAGS:
		#   --iptables=false --ip6tables=false --ip-forward=false  leave the
		#       host's firewall and net.ipv4.ip_forward alone (without the last
		#       flag dockerd sets ip_forward=1 even with --iptables=false); the
		#       tests need no container networking.
		#   --bridge=none  no docker0 bridge and no 172.17.0.0/16 addresses:
		#       containers get only loopback, with or without --network none.
		#   --exec-opt native.cgroupdriver=cgroupfs  no systemd runs here.
		#   --storage-driver  overlay2 when the kernel allows it, else vfs.
		#   --pidfile  our own, so stop-docker.sh stops only this daemon.
		#   --exec-root  state, containerd's sockets: never shared by two daemons.
		flags=(
			--host "unix://$SOCK"
			--pidfile "$PIDFILE"
			--data-root "$DATA_ROOT"
			--exec-root "$EXEC_ROOT"
			--storage-driver "$STORAGE_DRIVER"
			--iptables=false
			--ip6tables=false
			--ip-forward=false
			--bridge=none
			--exec-opt native.cgroupdriver=cgroupfs
		)
		echo "==== $(date -u '+%Y-%m-%dT%H:%M:%SZ') ensure-docker.sh: dockerd ${flags[*]}" >>"$LOG"
		say "starting: dockerd ${flags[*]}"
		say "  (log: $LOG)"
		# setsid: its own session, so a Ctrl-C on `make` doesn't take it down;
		# 9>&-: it must not inherit (and hold forever) this script's lock.
		setsid dockerd "${flags[@]}" </dev/null >>"$LOG" 2>&1 9>&- &
		ourpid=$!
	fi

	t0=$SECONDS
	until docker_answers; do
		if ! alive "$ourpid"; then
			log_tail
			die 1 "dockerd (pid $ourpid) exited before answering"
		fi
		if [ $((SECONDS - t0)) -ge "$TIMEOUT" ]; then
			log_tail
			die 1 "dockerd (pid $ourpid) did not answer within $TIMEOUT s (it keeps running; stop it with tests/docker/stop-docker.sh)"
		fi
		sleep 0.5
	done
	say "dockerd (pid $ourpid) answers after $((SECONDS - t0)) s"
fi
server_summary | sed 's/^/ensure-docker: /'

# -------------------------------------------------------- 3. test image ---

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
	say "image $IMAGE present: not rebuilding"
else
	# Debian's busybox-static: a static /bin/busybox that runs in a scratch
	# image. (Debian's plain `busybox` is dynamic and conflicts with it: then
	# take the static binary from the .deb without installing it.)
	ctx=$(mktemp -d /tmp/volsnap-image.XXXXXX)
	CLEAN_DIRS+=("$ctx")
	bb=""
	if pkg_installed busybox-static; then
		bb=/bin/busybox
	elif pkg_installed busybox; then
		can_install || die 1 "need busybox-static's binary and cannot apt-get it"
		say "busybox (dynamic) is installed: extracting busybox-static's binary without installing it"
		[ -n "$APT_UPDATED" ] || { apt-get update -qq && APT_UPDATED=1; }
		(cd "$ctx" && apt-get download -qq busybox-static >/dev/null 2>&1) ||
			die 1 "apt-get download busybox-static failed"
		dpkg-deb -x "$ctx"/busybox-static_*.deb "$ctx/deb"
		bb="$ctx/deb/bin/busybox"
	else
		can_install || die 1 "busybox-static is missing and this script cannot install it"
		apt_install busybox-static
		bb=/bin/busybox
	fi
	if ldd "$bb" >/dev/null 2>&1; then
		die 1 "$bb is dynamically linked: it cannot run in a FROM scratch image"
	fi

	root="$ctx/rootfs"
	mkdir -p "$root/bin" "$root/tmp"
	chmod 1777 "$root/tmp"
	cp "$bb" "$root/bin/busybox"
	# Every applet as a symlink: sh, sleep, cat, touch, echo, ls, ...
	for applet in $("$root/bin/busybox" --list); do
		[ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
	done
	cat >"$ctx/Dockerfile" <<-'EOF'
		FROM scratch
		COPY rootfs/ /
		ENV PATH=/bin
		LABEL dev.volsnap.test-image="busybox-static"
		CMD ["sh"]
	EOF
	say "building $IMAGE FROM scratch with Debian's busybox-static ($("$root/bin/busybox" | head -n 1 | cut -d' ' -f1-2))"
	# No buildx here: the classic builder (DOCKER_BUILDKIT=0) needs nothing
	# else. `docker import` of the rootfs is the fallback.
	if DOCKER_BUILDKIT=0 docker build -q -t "$IMAGE" "$ctx" >"$ctx/build.log" 2>&1; then
		say "built $IMAGE with docker build"
	else
		warn "docker build failed ($(tail -n 1 "$ctx/build.log")); trying docker import"
		tar -C "$root" -c . | docker import \
			--change 'ENV PATH=/bin' --change 'CMD ["sh"]' \
			--change 'LABEL dev.volsnap.test-image="busybox-static"' \
			- "$IMAGE" >/dev/null || die 1 "docker import failed too"
		say "built $IMAGE with docker import"
	fi
fi

# ------------------------------------------------------------ 4. verify ---

if [ "${VOLSNAP_DOCKER_SKIP_VERIFY:-0}" = 1 ]; then
	say "verification skipped (VOLSNAP_DOCKER_SKIP_VERIFY=1); ready ($((SECONDS - START)) s)"
	exit 0
fi

tag="volsnap-ensure-$$"
RUN=(docker run --rm --pull never --network none)
check() { # check NAME EXPECTED ACTUAL
	if [ "$2" = "$3" ]; then
		say "  ok: $1"
	else
		die 1 "verification '$1' failed: expected '$2', got '$3'"
	fi
}
say "verifying the engine with $IMAGE:"

check "docker run --network none" ok "$("${RUN[@]}" "$IMAGE" sh -c 'echo ok' 2>&1)"

bind=$(mktemp -d /tmp/volsnap-bind.XXXXXX)
CLEAN_DIRS+=("$bind")
echo from-host >"$bind/in"
check "bind mount (-v $bind:/data)" from-host \
	"$("${RUN[@]}" -v "$bind:/data" "$IMAGE" sh -c 'cat /data/in && echo from-container > /data/out' 2>&1)"
check "bind mount write-back" from-container "$(cat "$bind/out" 2>/dev/null)"

vol="$tag-vol"
CLEAN_VOLUMES+=("$vol")
docker volume create "$vol" >/dev/null
"${RUN[@]}" -v "$vol:/data" "$IMAGE" sh -c 'echo kept > /data/f' >/dev/null 2>&1 || true
check "named volume (-v $vol:/data) keeps data across containers" kept \
	"$("${RUN[@]}" -v "$vol:/data" "$IMAGE" cat /data/f 2>&1)"

ctr="$tag-sleep"
CLEAN_CONTAINERS+=("$ctr")
state() { docker inspect -f '{{.State.Status}}' "$ctr" 2>&1; }
# --init (tini as pid 1) so `docker stop` ends `sleep` at once with SIGTERM.
docker run -d --pull never --network none --init --name "$ctr" "$IMAGE" sleep 1000 >/dev/null
check "docker run -d sleep 1000" running "$(state)"
if out=$(docker pause "$ctr" 2>&1) && [ "$(state)" = paused ]; then
	say "  ok: docker pause (cgroup freezer works)"
	docker unpause "$ctr" >/dev/null
	check "docker unpause" running "$(state)"
else
	msg="docker pause does not work here: ${out:-state $(state)}"
	if [ "${VOLSNAP_DOCKER_REQUIRE_PAUSE:-0}" = 1 ]; then die 1 "$msg"; fi
	warn "$msg"
fi
docker stop -t 10 "$ctr" >/dev/null
check "docker stop" exited "$(state)"
docker start "$ctr" >/dev/null
check "docker start" running "$(state)"
docker rm -f "$ctr" >/dev/null
docker volume rm "$vol" >/dev/null
say "Docker is ready: $(docker version --format '{{.Server.Version}}'), test image $IMAGE ($((SECONDS - START)) s)"
