#!/usr/bin/env bash
# `make bench`: volsnap's capture and restore next to the usual GNU tar
# pipelines, on two deterministic datasets, printed as one Markdown table of
# medians and ratios (bench/report.sh), with the machine it ran on.
#
#   make bench                          # release build, bench-deps, then this
#   BENCH_RUNS=5 bash bench/bench.sh    # after a release build
#
# Environment (defaults in bench/lib.sh):
#   BENCH_DIR          datasets (cached), work trees, results (/var/tmp/volsnap-bench)
#   BENCH_SIZE_MB      size of the mixed dataset in MiB (512)
#   BENCH_SMALL_FILES  number of files of the small-files dataset (48000)
#   BENCH_RUNS         runs of every case; the table shows medians (3)
#   BENCH_DROPS        manifests dropped for the daemon latency (10)
#   BENCH_KEEP=1       keep the work trees (archives, logs) after the run
#   CARGO_TARGET_DIR   where the release binary is, as for cargo (target)
#
# Per dataset and run, in this order (round robin, so a slow phase of a
# shared machine spreads over every contender rather than one):
#   capture gzip   volsnap | tar -czf | tar -cf - | pigz -6
#   capture zstd   volsnap | tar -cf - | zstd -3 -T0
#   restore gzip into a new directory: volsnap | tar -xzf | pigz -dc | tar -x
#   restore zstd into a new directory: volsnap | zstd -dc | tar -x
#   restore gzip in place with the defaults (keepPreRestore: true)
# then once: the daemon's file-drop -> Completed latency.
#
# Equal work: volsnap fsyncs its archive, so the tar captures end with
# `sync FILE` (fsync); volsnap's restores end with syncfs, so the tar
# extractions end with `sync -f DIR` (syncfs). Both are inside the timing.
# The page cache is warm (the datasets fit in memory; nothing is dropped, so
# no root is needed and neighbours on a shared machine are left alone); a
# `sync` before every case makes no case pay for another's writeback.
#
# It only measures: nothing fails because it is slow. It does fail, loudly,
# when volsnap (or a tar pipeline) fails or restores anything but the
# dataset: every case's output is compared with the dataset's manifest once,
# outside the timed region.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=bench/dataset.sh
source "$BENCH_SRC/dataset.sh"
cd "$REPO"

T_START=$(now_ns)
BIN=$(volsnap_bin)
[ -x "$BIN" ] || die "no release binary at $BIN: run 'cargo build --release' first (make bench does)"
for tool in tar gzip pigz zstd openssl od findmnt /usr/bin/time; do
  command -v "$tool" > /dev/null || die "$tool is missing: 'make bench-deps' installs the benchmark's tools (as root)"
done
[ "$BENCH_RUNS" -ge 1 ] 2> /dev/null || die "BENCH_RUNS must be a number >= 1"
[ "$BENCH_SIZE_MB" -ge 16 ] 2> /dev/null || die "BENCH_SIZE_MB must be a number >= 16"
[ "$BENCH_SMALL_FILES" -ge 250 ] 2> /dev/null || die "BENCH_SMALL_FILES must be a number >= 250"
# The tar pipelines are sh -c strings with the paths in single quotes.
case "$BENCH_DIR" in *"'"*) die "BENCH_DIR must not contain a single quote" ;; esac
mkdir -p "$BENCH_DIR/datasets"
BENCH_DIR="$(cd "$BENCH_DIR" && pwd)"

# ---------------------------------------------------------------- space
# Per dataset at once: the cached dataset, the live copy, one restored
# tree, the in-place restore's staging tree, and the archives (each run
# keeps its volsnap captures and pre-restore snapshot; a tar archive lives
# only while it is measured). About 12x the mixed dataset covers it; the
# small files take 4 KiB blocks each (about 6.5 KiB on disk on average).
SMALL_DISK_MB=$((BENCH_SMALL_FILES * 13 / 2 / 1024 + 1))
BIGGER=$((BENCH_SIZE_MB > SMALL_DISK_MB ? BENCH_SIZE_MB : SMALL_DISK_MB))
NEED_MB=$((BENCH_SIZE_MB + SMALL_DISK_MB + 12 * BIGGER))
HAVE_MB=$(($(df -Pk "$BENCH_DIR" | awk 'NR == 2 { print $4 }') / 1024))
if [ "$HAVE_MB" -lt "$NEED_MB" ]; then
  die "not enough free space in BENCH_DIR=$BENCH_DIR: the benchmark needs about $NEED_MB MiB, $HAVE_MB MiB are free (set BENCH_DIR, or lower BENCH_SIZE_MB / BENCH_SMALL_FILES)"
fi
case "$(stat -f -c %T "$BENCH_DIR")" in
  tmpfs) note "warning: $BENCH_DIR is on tmpfs: syncfs and fsync cost nothing there, the numbers are not those of a disk" ;;
esac

RES="$BENCH_DIR/results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RES"
RESULTS="$RES/results.tsv"
META="$RES/meta.sh"
: > "$RESULTS"
: > "$META"

# record GROUP TOOL RUN: one measured run (T_SECS, T_RSS_KIB) and the size
# of the archive written (0 for restores), for bench/report.sh.
record() {
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$KIND" "$1" "$2" "$3" "$T_SECS" "$T_RSS_KIB" "${4:-0}" >> "$RESULTS"
}
meta() { printf '%s=%q\n' "$1" "$2" >> "$META"; }

# ---------------------------------------------------------------- volsnap
# volsnap in files mode, as a user would script it: a manifest in the
# manifests directory, then one reconciliation pass that does the work.
volsnap_once() { # LOG
  timed "$1" "$BIN" run --once --manifests "$M" --state "$S" --allowed-root "$ROOT" ||
    { tail -n 20 "$1" >&2; die "volsnap run --once exited with an error (log: $1)"; }
}

phase_of() { sed -n 's/^  phase: //p' "$1" 2> /dev/null | sed -n 1p; }

# must_complete KIND NAME LOG: the object's status says Completed, or the
# benchmark stops with the status and the log.
must_complete() {
  local status="$S/status/default/$1/$2.yaml" phase
  phase=$(phase_of "$status")
  if [ "$phase" != Completed ]; then
    cat "$status" >&2 2> /dev/null || true
    tail -n 20 "$3" >&2
    die "$1/$2 is '${phase:-missing}', not Completed (log: $3)"
  fi
}

snapshot_yaml() { # NAME COMPRESSION
  cat > "$M/$1.yaml" << EOF
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

capture_volsnap() { # COMPRESSION EXT RUN
  local name="c-$1-$3" log="$LOGS/c-$1-$3.log"
  snapshot_yaml "$name" "$1"
  sync
  note "$KIND run $3: capture $1: volsnap"
  volsnap_once "$log"
  must_complete volumesnapshots "$name" "$log"
  if grep -q 'reason: CapturedWithWarnings' "$S/status/default/volumesnapshots/$name.yaml"; then
    die "$name captured with warnings (the dataset must read cleanly): $S/status/default/volumesnapshots/$name.yaml"
  fi
  record "capture-$1" volsnap "$3" "$(stat -c %s "$S/archives/default/$name.$2")"
}

# restore_volsnap NAME SNAPSHOT RUN [TARGET]: a restore into TARGET (a new
# directory, nothing stopped) or, without TARGET, in place with the defaults.
restore_volsnap() {
  local name="$1" snap="$2" run="$3" target="${4:-}" log="$LOGS/$1.log"
  {
    echo "apiVersion: volsnap.dev/v1alpha1"
    echo "kind: VolumeRestore"
    echo "metadata:"
    echo "  name: $name"
    echo "spec:"
    echo "  snapshotName: $snap"
    [ -z "$target" ] || printf '  targetPath: %s\n  quiesce: None\n' "$target"
  } > "$M/$name.yaml"
  sync
  volsnap_once "$log"
  must_complete volumerestores "$name" "$log"
}

# ---------------------------------------------------------------- tar
# peer LOG COMMAND: a tar pipeline under GNU time through sh -c, so the
# whole pipeline is timed and the peak RSS is its largest process.
peer() {
  local log="$1"
  sync
  timed "$log" sh -c "$2" || { tail -n 20 "$log" >&2; die "'$2' failed (log: $log)"; }
}

capture_peer() { # GROUP TOOL RUN OUT COMMAND
  note "$KIND run $3: ${1/-/ }: $2"
  rm -f "$4"
  peer "$LOGS/$1-$2-$3.log" "$5"
  record "$1" "$2" "$3" "$(stat -c %s "$4")"
  rm -f "$4" # the size is recorded: no need to keep hundreds of MiB
}

restore_peer() { # GROUP TOOL RUN COMMAND (extracting into $X)
  note "$KIND run $3: ${1/-/ } into a new directory: $2"
  remove_tree "$X"
  mkdir -p "$X"
  peer "$LOGS/$1-$2-$3.log" "$4"
  record "$1" "$2" "$3"
  [ "$3" != 1 ] || verify_tree "$2 ($KIND)" "$X/volumes/0" "$DS_MANIFEST"
  remove_tree "$X"
}

# drift: what an application changes after the snapshot; the in-place
# restore must undo it (checked by the manifest compare).
drift() {
  local f
  rm -rf "$VOL/files/g00/d000"
  f=$(find "$VOL" -type f -name 'f*' | LC_ALL=C sort | tail -n 1)
  [ -z "$f" ] || printf 'appended after the snapshot\n' >> "$f"
  printf 'created after the snapshot\n' > "$VOL/new-file"
}

# ---------------------------------------------------------------- one dataset
run_dataset() {
  KIND="$1"
  dataset "$KIND" # sets DS_DIR, DS_MANIFEST
  local w="$BENCH_DIR/work-$KIND" run t0
  rm -rf "$w"
  ROOT="$w/root" VOL="$w/root/vol" M="$w/manifests" S="$w/state" OUT="$w/out" LOGS="$w/logs" X="$w/root/extract"
  mkdir -p "$ROOT" "$M" "$OUT" "$LOGS"
  # Work on a copy: an in-place restore replaces the volume, and the cached
  # dataset must stay the pristine reference. The copy also warms the cache.
  t0=$(now_ns)
  cp -a "$DS_DIR" "$VOL"
  note "$KIND: copied the dataset in $(secs_since "$t0") s"
  local bytes files
  bytes=$(find "$VOL" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
  files=$(find "$VOL" -type f -printf x | wc -c)
  meta "${KIND}_bytes" "$bytes"
  meta "${KIND}_files" "$files"
  meta "${KIND}_dirs" "$(find "$VOL" -type d -printf x | wc -c)"
  meta "${KIND}_manifest" "$(md5sum < "$DS_MANIFEST" | cut -c1-12)"
  meta "${KIND}_name" "$(basename "$DS_DIR")"
  note "$KIND: $((bytes / 1048576)) MiB in $files files, $BENCH_RUNS runs"

  local gz="$S/archives/default/c-gzip-1.tar.gz" zst="$S/archives/default/c-zstd-1.tar.zst"
  for ((run = 1; run <= BENCH_RUNS; run++)); do
    t0=$(now_ns)
    capture_volsnap gzip tar.gz "$run"
    capture_peer capture-gzip "tar -czf" "$run" "$OUT/a.tar.gz" \
      "tar -czf '$OUT/a.tar.gz' -C '$VOL' . && sync '$OUT/a.tar.gz'"
    capture_peer capture-gzip "tar | pigz -6" "$run" "$OUT/a.tar.gz" \
      "tar -cf - -C '$VOL' . | pigz -6 > '$OUT/a.tar.gz' && sync '$OUT/a.tar.gz'"
    capture_volsnap zstd tar.zst "$run"
    capture_peer capture-zstd "tar | zstd -3 -T0" "$run" "$OUT/a.tar.zst" \
      "tar -cf - -C '$VOL' . | zstd -q -3 -T0 > '$OUT/a.tar.zst' && sync '$OUT/a.tar.zst'"

    # Restores read the first run's volsnap archives (the same bytes for
    # every contender).
    note "$KIND run $run: restore gzip into a new directory: volsnap"
    restore_volsnap "rn-gzip-$run" c-gzip-1 "$run" "$ROOT/new-gzip-$run"
    record restore-gzip volsnap "$run"
    [ "$run" != 1 ] || verify_tree "volsnap restore gzip ($KIND)" "$ROOT/new-gzip-$run/data" "$DS_MANIFEST"
    remove_tree "$ROOT/new-gzip-$run"
    restore_peer restore-gzip "tar -xzf" "$run" "tar -xzf '$gz' -C '$X' && sync -f '$X'"
    restore_peer restore-gzip "pigz -dc | tar -x" "$run" "pigz -dc '$gz' | tar -x -C '$X' && sync -f '$X'"

    note "$KIND run $run: restore zstd into a new directory: volsnap"
    restore_volsnap "rn-zstd-$run" c-zstd-1 "$run" "$ROOT/new-zstd-$run"
    record restore-zstd volsnap "$run"
    [ "$run" != 1 ] || verify_tree "volsnap restore zstd ($KIND)" "$ROOT/new-zstd-$run/data" "$DS_MANIFEST"
    remove_tree "$ROOT/new-zstd-$run"
    restore_peer restore-zstd "zstd -dc | tar -x" "$run" "zstd -dc '$zst' | tar -x -C '$X' && sync -f '$X'"

    note "$KIND run $run: restore gzip in place (keepPreRestore: true): volsnap"
    drift
    restore_volsnap "ri-$run" c-gzip-1 "$run"
    record restore-inplace volsnap "$run"
    must_complete volumesnapshots "ri-$run-pre-restore" "$LOGS/ri-$run.log"
    [ "$run" != 1 ] || verify_tree "volsnap in-place restore ($KIND)" "$VOL" "$DS_MANIFEST"
    note "$KIND run $run took $(secs_since "$t0") s"
  done
  meta "${KIND}_gz_archive" "$(stat -c %s "$gz")"
  meta "${KIND}_zst_archive" "$(stat -c %s "$zst")"
  if [ "${BENCH_KEEP:-0}" = 1 ]; then note "kept $w"; else remove_tree "$w"; fi
}

# ---------------------------------------------------------------- latency
# The daemon running on an empty manifests directory; a small manifest is
# dropped in (renamed, as editors and `volsnap apply` do) and its status
# file polled until Completed. Measures reaction time, not throughput.
drop_latency() {
  local w="$BENCH_DIR/work-latency" i t0 status daemon lat=()
  rm -rf "$w"
  mkdir -p "$w/manifests" "$w/data/vol"
  printf 'small volume\n' > "$w/data/vol/file.txt"
  "$BIN" run --manifests "$w/manifests" --state "$w/state" --allowed-root "$w/data" > "$w/daemon.log" 2>&1 &
  daemon=$!
  # shellcheck disable=SC2064 # the pid is known now
  trap "kill $daemon 2> /dev/null || true" EXIT
  note "daemon: file drop -> Completed latency, $BENCH_DROPS drops"
  for ((i = 1; i <= BENCH_DROPS; i++)); do
    cat > "$w/drop-$i.yaml" << EOF
apiVersion: volsnap.dev/v1alpha1
kind: VolumeSnapshot
metadata:
  name: drop-$i
spec:
  source:
    paths:
      - {name: vol, path: $w/data/vol}
EOF
    status="$w/state/status/default/volumesnapshots/drop-$i.yaml"
    t0=$(now_ns)
    mv "$w/drop-$i.yaml" "$w/manifests/drop-$i.yaml"
    until grep -qE '^  phase: (Completed|Failed)' "$status" 2> /dev/null; do
      [ $(($(now_ns) - t0)) -lt 60000000000 ] || { tail -n 20 "$w/daemon.log" >&2; die "drop-$i: no Completed status after 60 s"; }
      sleep 0.002
    done
    lat+=("$((($(now_ns) - t0) / 1000))")
    [ "$(phase_of "$status")" = Completed ] || { cat "$status" >&2; die "drop-$i failed"; }
  done
  kill -TERM "$daemon" 2> /dev/null || true
  wait "$daemon" 2> /dev/null || true
  trap - EXIT
  meta latency_us "${lat[*]}"
  rm -rf "$w"
}

# ---------------------------------------------------------------- main
{
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  machine_info
  echo "- volsnap: $("$BIN" --version 2> /dev/null | sed -n 1p) ($(git -C "$REPO" describe --always --dirty 2> /dev/null || echo 'not a git checkout')); $(tar --version | sed -n 1p); pigz $(pigz --version 2>&1 | awk '{ print $2 }'); $(zstd --version | sed 's/^\*\*\* //; s/, by.*//')"
} > "$RES/machine.md"
meta runs "$BENCH_RUNS"
run_dataset mixed
run_dataset small
drop_latency
meta total_secs "$(secs_since "$T_START")"

bash "$BENCH_SRC/report.sh" "$RES" | tee "$RES/report.md"
note "report saved as $RES/report.md (raw runs: $RESULTS)"
