#!/usr/bin/env bash
# Restore benchmark: volsnap's in-place VolumeRestore against extracting the
# same archive with GNU tar (+ gzip), pigz and zstd. Reports restore time,
# throughput, peak RSS and, above all, the workload's downtime: volsnap
# extracts next to the live data while the workload runs and only swaps
# directories while it is stopped; a naive `tar -x` restore keeps the
# workload down for the whole extraction.
#
#   make bench                               # release build, capture.sh, then this script
#   BENCH_RESTORE_MB=256 bash bench/restore.sh   # smaller dataset
#
# Environment:
#   BENCH_RESTORE_MB     volume size in MiB (default 1024)
#   BENCH_RESTORE_FILES  number of small files (default 20000, 250 per directory)
#   BENCH_ZSTD=0         skip the zstd rows
#   BENCH_RUNS           runs of each fast row, reported as medians (default 3)
#   BENCH_DIR            parent of the work directory (default /var/tmp/volsnap-bench)
#   SKIP_BUILD=1         use the existing target/release/volsnap
#   BENCH_KEEP=1         keep the work directory (dataset, state, archives, logs)
#
# Everything (dataset included) lives in a fresh work directory that is
# removed on exit. Prints numbers only: it never fails because something is
# slow, but it says so loudly when a restore fails or restores wrong data.
# shellcheck disable=SC2059 # printf formats in variables are the table layout
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SIZE_MB="${BENCH_RESTORE_MB:-1024}"
SMALL_FILES="${BENCH_RESTORE_FILES:-20000}"
WITH_ZSTD="${BENCH_ZSTD:-1}"
RUNS="${BENCH_RUNS:-3}"
DIR="${BENCH_DIR:-/var/tmp/volsnap-bench}"
BIN="$PWD/target/release/volsnap"
T_START=$(date +%s)

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --quiet
fi
[ -x "$BIN" ] || { echo "no release binary at $BIN" >&2; exit 1; }

TIME=/usr/bin/time
if [ ! -x "$TIME" ]; then
  echo "note: GNU time (/usr/bin/time) is missing: peak RSS is not measured (make bench-deps installs it)" >&2
  TIME=""
fi
HAVE_PIGZ=1
command -v pigz > /dev/null || { HAVE_PIGZ=0; echo "note: pigz is not installed (make bench-deps installs it): row skipped" >&2; }
if [ "$WITH_ZSTD" = 1 ] && ! command -v zstd > /dev/null; then
  echo "note: zstd is not installed (make bench-deps installs it): zstd rows skipped" >&2
  WITH_ZSTD=0
fi

[ "$SIZE_MB" -ge 64 ] || { echo "BENCH_RESTORE_MB must be at least 64" >&2; exit 1; }
mkdir -p "$DIR"
WORK=$(mktemp -d "$DIR/restore.XXXXXX")
ROOT="$WORK/root"      # --allowed-root
VOL="$ROOT/vol"        # the live volume
GEN="$WORK/gen"        # generator scratch
M="$WORK/manifests"
S="$WORK/state"
X="$WORK/extract"      # tar/pigz/zstd extraction target
LOGS="$WORK/logs"
mkdir -p "$VOL" "$GEN" "$M" "$LOGS"

WATCHER=""
cleanup() {
  [ -z "$WATCHER" ] || kill "$WATCHER" 2> /dev/null || true
  if [ "${BENCH_KEEP:-0}" = 1 ]; then
    echo "kept: $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

FSTYPE=$(stat -f -c %T "$WORK")
# For the report: the real type and the mount options (discard, for one,
# makes every removal of old data slower).
FSINFO=$FSTYPE
if command -v findmnt > /dev/null; then
  FSINFO=$(findmnt -n -o FSTYPE,OPTIONS -T "$WORK" || echo "$FSTYPE")
fi
if [ "$FSTYPE" = tmpfs ]; then
  echo "warning: $WORK is on tmpfs: syncfs is free there, so the numbers are not those of a disk (set BENCH_DIR)" >&2
fi
# Live data, staging copy, two archives, the pre-restore archive and one
# extraction directory can exist at once: ask for 5x the volume.
AVAIL_KIB=$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')
if [ "$AVAIL_KIB" -lt $((SIZE_MB * 1024 * 5)) ]; then
  echo "not enough space under $DIR: $((AVAIL_KIB / 1024)) MiB free, the benchmark needs about $((SIZE_MB * 5)) MiB" >&2
  exit 1
fi

# ---------------------------------------------------------------- dataset
# Half incompressible (big random files, like database pages or media), a
# quarter log text in two large files, a quarter many small files (1-60 KiB,
# text and binary) in nested directories, plus a few symlinks and empty
# directories. Generated from /dev/urandom and one 16 MiB awk chunk that is
# repeated (farther apart than gzip's 32 KiB and zstd -3's 2 MiB windows, so
# it does not compress better than fresh text would).
make_dataset() {
  local random_mb=$((SIZE_MB * 50 / 100)) text_mb=$((SIZE_MB * 25 / 100))
  local small_mb=$((SIZE_MB - random_mb - text_mb))
  echo "creating the ${SIZE_MB} MiB volume in $VOL: ${random_mb} MiB random, ${text_mb} MiB log text, ${small_mb} MiB in ${SMALL_FILES} small files" >&2
  mkdir -p "$VOL/db" "$VOL/logs" "$VOL/files" "$VOL/cache/empty" "$VOL/tmp"
  local left=$random_mb nrand=0 n
  while [ "$left" -gt 0 ]; do
    n=$((left < 64 ? left : 64))
    head -c "$((n * 1048576))" /dev/urandom > "$VOL/db/blob-$nrand.bin"
    left=$((left - n)); nrand=$((nrand + 1))
  done
  awk -v bytes=$((16 * 1048576)) 'BEGIN {
    srand(7); split("GET POST PUT DELETE", m, " "); split("200 200 200 201 204 301 404 500", s, " ");
    split("users orders items carts sessions invoices", r, " "); total = 0;
    while (total < bytes) {
      line = sprintf("2026-11-%02dT%02d:%02d:%02d.%03dZ INFO http %s /api/v1/%s/%d status=%s bytes=%d ms=%d trace=%08x",
        1 + int(rand() * 28), int(rand() * 24), int(rand() * 60), int(rand() * 60), int(rand() * 1000),
        m[1 + int(rand() * 4)], r[1 + int(rand() * 6)], int(rand() * 100000), s[1 + int(rand() * 8)],
        int(rand() * 65536), int(rand() * 2000), int(rand() * 4294967295));
      print line; total += length(line) + 1;
    }
  }' > "$GEN/chunk.txt"
  left=$text_mb
  local ntext=0 k
  while [ "$left" -gt 0 ]; do
    n=$((left < 128 ? left : 128))
    for ((k = 0; k < (n + 15) / 16; k++)); do cat "$GEN/chunk.txt"; done > "$VOL/logs/app-$ntext.log"
    # Cut to size afterwards: `| head -c` could SIGPIPE cat under pipefail.
    truncate -s "$((n * 1048576))" "$VOL/logs/app-$ntext.log"
    left=$((left - n)); ntext=$((ntext + 1))
  done
  # Small files: 250 per leaf directory files/dNN/eN, sliced (dd, then split)
  # from the big files: even leaves text, odd leaves binary. Sizes cycle
  # through 8 classes averaging the target mean.
  local leaves=$(((SMALL_FILES + 249) / 250))
  local mean=$((small_mb * 1048576 / (leaves * 250)))
  local classes=(8 30 60 120 240 15 90 237) i size src span max off leaf
  for ((i = 0; i < leaves; i++)); do
    size=$((mean * classes[i % 8] / 100))
    [ "$size" -gt 0 ] || size=1
    span=$((size * 250))
    if [ $((i % 2)) = 0 ]; then src="$VOL/logs/app-$((i / 2 % ntext)).log"; else src="$VOL/db/blob-$((i / 2 % nrand)).bin"; fi
    max=$(($(stat -c %s "$src") - span)); [ "$max" -gt 0 ] || max=0
    off=$(( ((i / 2) * 7919 * 4096) % (max + 1) ))
    leaf="$VOL/files/d$(printf %02d $((i / 10)))/e$((i % 10))"
    mkdir -p "$leaf"
    dd if="$src" iflag=skip_bytes,count_bytes skip="$off" count="$span" bs=1M status=none |
      split -b "$size" -a 3 -d --additional-suffix=.dat - "$leaf/f"
  done
  ln -s ../logs/app-0.log "$VOL/tmp/current.log"
  ln -s db/blob-0.bin "$VOL/latest"
  chmod 0700 "$VOL/db"
  rm -rf "$GEN"
}

# What must come back: every entry's type, mode, owner, size (files),
# mtime in whole seconds (what tar keeps), symlink target, and every file's
# content. Directory sizes are left out (they depend on the history of the
# directory, not on its content).
fingerprint() {
  (
    cd "$1"
    find . -type d -printf 'd %m %U %G %Ts %p\n' | LC_ALL=C sort
    find . ! -type d -printf '%y %m %U %G %s %Ts %p %l\n' | LC_ALL=C sort
    find . -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum
  ) | md5sum | cut -d' ' -f1
}

# Changes to the live data between snapshot and restore, as an application
# would make (the restore must undo them).
drift() {
  rm -rf "$VOL/files/d00"
  printf 'appended after the snapshot\n' >> "$VOL/logs/app-0.log"
  printf 'created after the snapshot\n' > "$VOL/tmp/new-file"
  chmod 0755 "$VOL/db"
  # Also the marker the swap watcher waits for: it leaves the live path
  # exactly when the old tree is swapped out.
  printf 'swap marker\n' > "$VOL/.bench-swap-marker"
}

# watch_swap OUT: in the background, polls (no fork per poll) until the
# marker leaves the live volume, then writes the epoch time to OUT.
mkfifo "$WORK/tick"
watch_swap() {
  local fd
  exec {fd}<> "$WORK/tick"
  while [ -e "$VOL/.bench-swap-marker" ]; do read -r -t 0.005 -u "$fd" _ || true; done
  if [ -n "${EPOCHREALTIME:-}" ]; then echo "${EPOCHREALTIME/,/.}"; else date +%s.%N; fi > "$1"
}

T0=$(date +%s%N)
make_dataset
GEN_SECS=$(awk -v a="$T0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
DATA_BYTES=$(find "$VOL" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
FILES=$(find "$VOL" -type f -printf x | wc -c)
DIRS=$(find "$VOL" -type d -printf x | wc -c)
DATA_MIB=$(awk -v d="$DATA_BYTES" 'BEGIN { printf "%.0f", d / 1048576 }')
T0=$(date +%s%N)
ORIGINAL=$(fingerprint "$VOL")
FP_SECS=$(awk -v a="$T0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
echo "volume: $VOL, $DATA_MIB MiB in $FILES files, $DIRS directories (generated in ${GEN_SECS} s, fingerprinted in ${FP_SECS} s)" >&2

# ---------------------------------------------------------------- caches
# Cold caches where the kernel lets us drop them (root, writable /proc/sys);
# otherwise every contender runs with the archive warm in the page cache.
CACHE_MODE=warm
if [ "$(id -u)" = 0 ] && sync && { echo 3 > /proc/sys/vm/drop_caches; } 2> /dev/null; then
  CACHE_MODE=cold
fi
# prepare ARCHIVE: before each measured run, write back what earlier runs
# left dirty (so no run pays for another's writeback), then drop or warm.
prepare() {
  sync
  if [ "$CACHE_MODE" = cold ]; then
    { echo 3 > /proc/sys/vm/drop_caches; } 2> /dev/null || CACHE_MODE=mixed
  else
    cat "$1" > /dev/null
  fi
}

# timed NAME COMMAND...: runs COMMAND with its output in $LOGS/NAME.log;
# sets T_SECS (wall) and T_RSS_KIB (peak RSS of the largest process, 0 when
# unmeasured). Returns COMMAND's status.
timed() {
  local name="$1"; shift
  local tf="$LOGS/$name.time" rc=0
  T_SECS=0; T_RSS_KIB=0
  if [ -n "$TIME" ]; then
    "$TIME" -f "%e %M" -o "$tf" "$@" > "$LOGS/$name.log" 2>&1 || rc=$?
    # On failure GNU time writes "Command exited with non-zero status N" first.
    read -r T_SECS T_RSS_KIB < <(tail -1 "$tf")
  else
    local t0
    t0=$(date +%s%N)
    "$@" > "$LOGS/$name.log" 2>&1 || rc=$?
    T_SECS=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
  fi
  return "$rc"
}

secs_between() { # two RFC 3339 timestamps with fractions -> seconds
  awk -v a="$(date -u -d "$1" +%s.%N)" -v b="$(date -u -d "$2" +%s.%N)" 'BEGIN { printf "%.3f", b - a }'
}

PROBLEMS=()
problem() { PROBLEMS+=("$*"); echo "PROBLEM: $*" >&2; }

# Per row (label), the values of every run, space-separated.
LABELS=()
declare -A WALL REST SYNC RSS DOWN CHECK SWAP NOTE
record() { # LABEL WALL RESTORE SYNC RSS_KIB DOWNTIME CHECK TO_SWAP
  local l="$1"
  [ -n "${WALL[$l]+x}" ] || LABELS+=("$l")
  WALL[$l]="${WALL[$l]:-} $2"; REST[$l]="${REST[$l]:-} $3"; SYNC[$l]="${SYNC[$l]:-} $4"
  RSS[$l]="${RSS[$l]:-} $5"; DOWN[$l]="${DOWN[$l]:-} $6"; CHECK[$l]="${CHECK[$l]:-} $7"
  SWAP[$l]="${SWAP[$l]:-} $8"
}
# agg OP DECIMALS "VALUES": median, min or max of the numeric values in the
# space-separated list, "-" when none.
agg() {
  tr ' ' '\n' <<< "$3" | sort -g | awk -v op="$1" -v dec="$2" '/^[0-9]+(\.[0-9]+)?$/ { v[++n] = $1 } END {
    if (!n) { print "-"; exit }
    if (op == "median") x = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2;
    else if (op == "min") x = v[1]; else x = v[n];
    printf "%.*f", dec, x }'
}

# ---------------------------------------------------------------- snapshots
snapshot_manifest() { # NAME COMPRESSION
  cat > "$M/snapshot-$1.yaml" <<EOF
apiVersion: volsnap.dev/v1alpha1
kind: VolumeSnapshot
metadata:
  name: $1
spec:
  source:
    paths:
      - name: data
        path: $VOL
  compression: $2
EOF
}
snapshot_manifest s-gz gzip
[ "$WITH_ZSTD" = 1 ] && snapshot_manifest s-zst zstd
ARCH_GZ="$S/archives/default/s-gz.tar.gz"
ARCH_ZST="$S/archives/default/s-zst.tar.zst"
echo "capturing the snapshot(s) with volsnap ..." >&2
if ! timed snapshots "$BIN" run --once --manifests "$M" --state "$S" --allowed-root "$ROOT"; then
  echo "volsnap could not capture the snapshots (see below); nothing to restore" >&2
  cat "$LOGS/snapshots.log" >&2
  exit 1
fi
SNAP_SECS=$T_SECS
for a in "$ARCH_GZ" $([ "$WITH_ZSTD" = 1 ] && echo "$ARCH_ZST"); do
  [ -f "$a" ] || { echo "missing archive $a" >&2; exit 1; }
done
if [ "$(fingerprint "$VOL")" != "$ORIGINAL" ]; then
  problem "capturing the snapshots changed the live volume"
fi

# ---------------------------------------------------------------- volsnap restores
status_field() { # FILE KEY: first "  key: value" at status level
  sed -n "s/^  $2: //p" "$1" | sed -n 1p
}

volsnap_restore() { # ROW-NAME RESTORE-NAME SNAPSHOT ARCHIVE KEEP
  local label="$1" name="$2" snap="$3" archive="$4" keep="$5"
  local status="$S/status/default/volumerestores/$name.yaml" log="$LOGS/$name.log"
  drift
  cat > "$M/restore-$name.yaml" <<EOF
apiVersion: volsnap.dev/v1alpha1
kind: VolumeRestore
metadata:
  name: $name
spec:
  snapshotName: $snap
  keepPreRestore: $keep
EOF
  prepare "$archive"
  echo "restoring $snap in place: $label ($name) ..." >&2
  local rc=0 swapped=""
  rm -f "$LOGS/$name.swap"
  watch_swap "$LOGS/$name.swap" &
  WATCHER=$!
  timed "$name" "$BIN" run --once --manifests "$M" --state "$S" --allowed-root "$ROOT" || rc=$?
  local wall="$T_SECS" rss="$T_RSS_KIB"
  kill "$WATCHER" 2> /dev/null || true
  wait "$WATCHER" 2> /dev/null || true
  WATCHER=""
  [ -s "$LOGS/$name.swap" ] && read -r swapped < "$LOGS/$name.swap"
  [ "$rc" = 0 ] || problem "$label ($name): volsnap run --once exited $rc (log: $log)"

  local phase downtime bytes started completed dur="-" to_swap="-" check
  phase=$(status_field "$status" phase 2> /dev/null || true)
  downtime=$(status_field "$status" downtimeSeconds 2> /dev/null || true)
  [ "$phase" = Completed ] || problem "$label: restore phase is '${phase:-missing}', not Completed ($status)"
  [ -n "$downtime" ] || { downtime="-"; [ "$phase" != Completed ] || problem "$label: Completed without status.downtimeSeconds"; }
  bytes=$( (sed -n 's/^  - bytes: //p' "$status" 2> /dev/null || true) | awk '{ s += $1 } END { print s + 0 }')
  if [ "$phase" = Completed ] && [ "$bytes" != "$DATA_BYTES" ]; then
    problem "$label: status.volumes[].bytes is $bytes, the volume holds $DATA_BYTES bytes in files"
  fi
  # The restore's own duration, from the daemon's microsecond log stamps.
  started=$(grep -F "Started restore" "$log" | grep -E "VolumeRestore default/$name( |\$)" | sed -n '1s/ .*//p' || true)
  completed=$(grep -F "Completed VolumeRestore" "$log" | grep -E "VolumeRestore default/$name( |\$)" | sed -n '1s/ .*//p' || true)
  if [ -n "$started" ] && [ -n "$completed" ]; then
    dur=$(secs_between "$started" "$completed")
    if [ -n "$swapped" ]; then
      to_swap=$(awk -v a="$(date -u -d "$started" +%s.%N)" -v b="$swapped" 'BEGIN { printf "%.3f", b - a }')
    elif [ "$phase" = Completed ]; then
      problem "$label ($name): Completed, but the live volume's marker file was never swapped out"
    fi
  else
    problem "$label: no 'Started restore'/'Completed VolumeRestore' log lines for $name (log: $log)"
  fi
  local runs
  runs=$(grep -cF "Started restore" "$log" || true)
  [ "$runs" = 1 ] || problem "$label: this run started $runs restores, expected exactly 1 (earlier Completed restores must not run again)"
  if [ "$(fingerprint "$VOL")" = "$ORIGINAL" ]; then check=ok; else check=MISMATCH; problem "$label ($name): the live volume differs from the snapshotted data after the restore"; fi
  local leftovers
  leftovers=$(find "$ROOT" -mindepth 1 -maxdepth 1 ! -name vol -printf '%f ' )
  [ -z "$leftovers" ] || problem "$label: left behind next to the volume: $leftovers"
  if [ "$keep" = true ]; then
    local pre="$S/status/default/volumesnapshots/$name-pre-restore.yaml" pphase psize
    pphase=$(status_field "$pre" phase 2> /dev/null || true)
    psize=$( (sed -n 's/^    sizeBytes: //p' "$pre" 2> /dev/null || true) | sed -n 1p)
    if [ "$pphase" = Completed ]; then
      NOTE[$label]="pre-restore $(awk -v z="${psize:-0}" 'BEGIN { printf "%.0f MiB", z / 1048576 }')"
    else
      problem "$label: pre-restore snapshot $name-pre-restore is '${pphase:-missing}', not Completed"
      NOTE[$label]="NO pre-restore snapshot"
    fi
  fi
  record "$label" "$wall" "$dur" - "$rss" "$downtime" "$check" "$to_swap"
}

# ---------------------------------------------------------------- tar, pigz, zstd
# Extraction into an empty directory, timed as is; then `sync -f` (syncfs,
# what volsnap does before its swap) timed separately, so "restore s" is
# durable data for every row.
baseline() { # ROW-NAME LOG-NAME ARCHIVE COMMAND...
  local label="$1" name="$2" archive="$3"; shift 3
  rm -rf "$X"; mkdir -p "$X"
  prepare "$archive"
  echo "extracting with $label ($name) ..." >&2
  if ! timed "$name" "$@"; then
    problem "$label failed (log: $LOGS/$name.log)"
    record "$label" - - - - - failed -
    return 0
  fi
  local wall="$T_SECS" rss="$T_RSS_KIB" t0 sync_s total
  t0=$(date +%s%N)
  sync -f "$X"
  sync_s=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
  total=$(awk -v a="$wall" -v b="$sync_s" 'BEGIN { printf "%.2f", a + b }')
  local got
  got=$(find "$X/volumes/0" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
  local check=ok
  [ "$got" = "$DATA_BYTES" ] || { check=MISMATCH; problem "$label ($name) extracted $got bytes, expected $DATA_BYTES"; }
  record "$label" "$wall" "$total" "$sync_s" "$rss" - "$check" -
  # What a naive in-place restore must also do with the old data (volsnap
  # does it after the swap, inside "restore s" but outside the downtime).
  if [ -z "$RM_SECS" ]; then
    sync
    t0=$(date +%s%N)
    rm -rf "$X"
    RM_SECS=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
  fi
  rm -rf "$X"
}
RM_SECS=""

# ---------------------------------------------------------------- runs
# Round-robin, so slow phases of the machine (writeback, discards, a
# neighbour) spread over every contender; the table shows medians.
# shellcheck disable=SC2016 # $1 and $2 are expanded by the inner bash
for ((run = 1; run <= RUNS; run++)); do
  echo "--- run $run of $RUNS" >&2
  volsnap_restore "volsnap gzip" "r-gz-$run" s-gz "$ARCH_GZ" false
  [ "$WITH_ZSTD" = 0 ] || volsnap_restore "volsnap zstd" "r-zst-$run" s-zst "$ARCH_ZST" false
  baseline "tar -xzf" "tar-xzf-$run" "$ARCH_GZ" tar -xzf "$ARCH_GZ" -C "$X"
  if [ "$HAVE_PIGZ" = 1 ]; then
    baseline "pigz -dc | tar -x" "pigz-$run" "$ARCH_GZ" bash -c 'pigz -dc "$1" | tar -x -C "$2"' _ "$ARCH_GZ" "$X"
  fi
  if [ "$WITH_ZSTD" = 1 ]; then
    baseline "zstd -dc | tar -x" "zstd-$run" "$ARCH_ZST" bash -c 'zstd -dc "$1" | tar -x -C "$2"' _ "$ARCH_ZST" "$X"
  fi
done
# Once: the defaults (keepPreRestore: true), so the replaced data is archived
# again (as zstd -1 on worker threads, whatever the snapshot's compression)
# before the restore completes.
echo "---" >&2
volsnap_restore "volsnap gzip +pre-restore" r-gz-keep s-gz "$ARCH_GZ" true

# ---------------------------------------------------------------- report
mib() { awk -v z="$(stat -c %s "$1")" 'BEGIN { printf "%.0f MiB", z / 1048576 }'; }
echo
echo "volsnap restore benchmark — $(nproc) cores, volume $DATA_MIB MiB / $FILES files / $DIRS dirs in $WORK"
echo "file system: $FSINFO"
echo "$("$BIN" --version 2> /dev/null || echo volsnap), $(tar --version | sed -n 1p), $( (pigz --version 2>&1 || true) | sed -n 1p), $( (zstd --version 2> /dev/null || true) | sed -n 1p)"
echo "archives (volsnap capture of both in ${SNAP_SECS} s): s-gz.tar.gz $(mib "$ARCH_GZ")$([ "$WITH_ZSTD" = 1 ] && echo ", s-zst.tar.zst $(mib "$ARCH_ZST")")"
case "$CACHE_MODE" in
  cold) echo "page cache: dropped before every run (echo 3 > /proc/sys/vm/drop_caches worked)" ;;
  warm) echo "page cache: could NOT be dropped (/proc/sys/vm/drop_caches not writable here); every run starts with the archive warm (read once just before)" ;;
  *) echo "page cache: dropping worked at first, then failed: runs are mixed cold/warm" ;;
esac
echo
ROW_FMT='%-26s %7s %9s %12s %9s %7s %6s %7s %10s  %s\n'
printf "$ROW_FMT" "tool" "wall s" "restore s" "range s" "swap at s" "+sync s" "MiB/s" "RSS MiB" "downtime s" "data check"
printf "$ROW_FMT" "----" "------" "---------" "-------" "---------" "-------" "-----" "-------" "----------" "----------"
for l in "${LABELS[@]}"; do
  n=$(wc -w <<< "${WALL[$l]}")
  rest=$(agg median 2 "${REST[$l]}")
  range="$(agg min 2 "${REST[$l]}")-$(agg max 2 "${REST[$l]}")"
  [ "$n" -gt 1 ] || range="(1 run)"
  mibs=$(awk -v d="$DATA_BYTES" -v s="$rest" 'BEGIN { if (s + 0 > 0) printf "%.0f", d / 1048576 / s; else print "-" }')
  rss=$(agg max 0 "${RSS[$l]}")
  if [ -n "$TIME" ] && [ "$rss" != - ]; then rss=$(awk -v r="$rss" 'BEGIN { printf "%.1f", r / 1024 }'); else rss=-; fi
  down=$(agg max 3 "${DOWN[$l]}")
  [ "$down" != - ] || down="$(agg median 2 "${WALL[$l]}")*"
  bad=$(tr ' ' '\n' <<< "${CHECK[$l]}" | grep -cvE '^(ok)?$' || true)
  check="ok ($n/$n)"
  [ "$bad" = 0 ] || check="FAILED ($bad/$n)"
  [ -z "${NOTE[$l]:-}" ] || check="$check, ${NOTE[$l]}"
  printf "$ROW_FMT" "$l" "$(agg median 2 "${WALL[$l]}")" "$rest" "$range" "$(agg median 2 "${SWAP[$l]}")" \
    "$(agg median 2 "${SYNC[$l]}")" \
    "$mibs" "$rss" "$down" "$check"
done
echo
echo "Medians of $RUNS runs (the +pre-restore row: 1 run); range s = fastest-slowest restore s."
echo "wall s:     volsnap: the whole 'volsnap run --once' (start-up, restore, exit); tar/pigz/zstd: the extraction"
echo "restore s:  volsnap: 'Started restore' -> 'Completed VolumeRestore' in its log (extract to staging, syncfs,"
echo "            swap, removal of the replaced data; +pre-restore: also archiving it); others: wall + sync"
echo "swap at s:  volsnap: from 'Started restore' to the moment the live directory was swapped (extraction with"
echo "            archive verification, syncfs, journal): the rest of restore s happens with the new data live"
echo "+sync s:    'sync -f' (syncfs) right after the extraction, which volsnap does inside its restore"
echo "MiB/s:      $DATA_MIB MiB of file data / median restore s"
echo "RSS MiB:    peak RSS of the largest single process (GNU time), not the sum over a pipeline; max over runs"
echo "downtime s: volsnap: status.downtimeSeconds (stop + swap + start), max over runs."
echo "            * tar/pigz/zstd used naively in place (stop the app, extract, start it) keep the app down for"
echo "              at least the whole extraction, before even syncing and removing the old data"
[ -z "$RM_SECS" ] || echo "            (removing the old data: 'rm -rf' of the $DATA_MIB MiB tree, synced first, took $RM_SECS s here)"
echo
if [ "${#PROBLEMS[@]}" -gt 0 ]; then
  echo "PROBLEMS (${#PROBLEMS[@]}):"
  printf '  - %s\n' "${PROBLEMS[@]}"
else
  echo "no problems: every restore Completed, restored the snapshotted data exactly, and left nothing behind"
fi
echo "bench/restore.sh took $(($(date +%s) - T_START)) s"
