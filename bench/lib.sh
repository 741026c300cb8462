# Shared helpers of the benchmark (sourced by bench/bench.sh and
# bench/report.sh): settings, timing, manifests, the machine description.
# shellcheck shell=bash

BENCH_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$BENCH_SRC/.." && pwd)"

BENCH_DIR="${BENCH_DIR:-/var/tmp/volsnap-bench}"
BENCH_SIZE_MB="${BENCH_SIZE_MB:-512}"
BENCH_SMALL_FILES="${BENCH_SMALL_FILES:-48000}"
BENCH_RUNS="${BENCH_RUNS:-3}"
BENCH_DROPS="${BENCH_DROPS:-10}"

# The binary `cargo build --release` just built: cargo honours
# CARGO_TARGET_DIR (relative to the directory cargo ran in, the repository).
volsnap_bin() {
  local target="${CARGO_TARGET_DIR:-target}"
  case "$target" in /*) ;; *) target="$REPO/$target" ;; esac
  echo "$target/release/volsnap"
}

note() { echo "bench: $*" >&2; }
die() { echo "bench: FAILED: $*" >&2; exit 1; }

now_ns() { date +%s%N; }
secs_since() { awk -v a="$1" -v b="$(now_ns)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }

# timed LOG COMMAND...: runs COMMAND under GNU time with its output in LOG.
# Sets T_SECS (wall clock) and T_RSS_KIB (maximum resident set size: for a
# `sh -c 'a | b'` pipeline GNU time reports the largest process of the tree,
# as wait4 accounts the children the shell waited for). Returns COMMAND's
# status: callers decide whether a failure is fatal.
timed() {
  local log="$1" rc=0
  shift
  /usr/bin/time -f '%e %M' -o "$log.time" "$@" > "$log" 2>&1 || rc=$?
  # On failure GNU time writes "Command exited with non-zero status N" first.
  # shellcheck disable=SC2034 # read by the callers
  read -r T_SECS T_RSS_KIB < <(tail -n 1 "$log.time")
  return "$rc"
}

# manifest DIR: one line per entry below DIR (type, mode, size of
# non-directories, path, symlink target) and the md5 of every file's
# content, sorted. Two trees with equal manifests hold the same data.
# Owners and mtimes are left out: they differ between machines, and the
# manifest's hash is what the report shows to compare datasets.
manifest() {
  (
    cd "$1" || exit 1
    find . -mindepth 1 -type d -printf 'd %m %p\n' | LC_ALL=C sort
    find . ! -type d -printf '%y %m %s %p %l\n' | LC_ALL=C sort
    find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r md5sum
  )
}

# verify_tree LABEL DIR MANIFEST: the restored tree must equal the dataset.
# Outside the timed region; a mismatch stops the benchmark: a fast wrong
# restore is a bug, not a number.
verify_tree() {
  local label="$1" dir="$2" want="$3" got t0
  got="$(mktemp)"
  t0=$(now_ns)
  manifest "$dir" > "$got"
  note "$label: checked against the dataset's manifest in $(secs_since "$t0") s"
  if ! cmp -s "$want" "$got"; then
    echo "bench: $label: the restored tree $dir differs from the dataset:" >&2
    diff "$want" "$got" | head -n 20 >&2
    rm -f "$got"
    die "$label restored wrong data"
  fi
  rm -f "$got"
}

# remove_tree DIR: rm -rf, saying how long it took: removing tens of
# thousands of files is not free (ext4 with `discard` is slow at it), and
# it is part of the benchmark's untimed overhead.
remove_tree() {
  local t0
  [ -e "$1" ] || return 0
  t0=$(now_ns)
  rm -rf "$1"
  note "removed $1 in $(secs_since "$t0") s"
}

# Markdown lines describing the machine, for the report's header.
machine_info() {
  local model mem fs
  model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | sed -n 1p)
  [ -n "$model" ] || model=$(lscpu 2> /dev/null | sed -n 's/^Model name: *//p' | sed -n 1p)
  mem=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
  fs=$(findmnt -n -o FSTYPE,OPTIONS -T "$BENCH_DIR" 2> /dev/null || stat -f -c %T "$BENCH_DIR")
  echo "- machine: $(nproc) cores (nproc), ${model:-unknown CPU}, $mem RAM"
  echo "- kernel: $(uname -srm)"
  echo "- BENCH_DIR: $BENCH_DIR on $(awk '{ print $1 " (" $2 ")" }' <<< "$fs")"
}
