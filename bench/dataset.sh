# shellcheck shell=bash
# Benchmark datasets, generated deterministically and cached (sourced by
# bench/bench.sh after bench/lib.sh).
#
# The same seed gives the same bytes on every machine: incompressible bytes
# are AES-128-CTR keystream (`openssl enc` with an explicit key and IV, so no
# password-to-key derivation that changed between OpenSSL versions), and all
# text comes from bench/gen.awk fed with that keystream through od. Neither
# /dev/urandom nor awk's rand() (different in mawk and gawk) is used.
#
# Each dataset is cached under $BENCH_DIR/datasets/, keyed by its
# parameters and by a hash of this file and gen.awk: changing the generator
# regenerates, re-running does not. Next to each dataset is its manifest
# (bench/lib.sh: manifest), the reference every restore is compared with;
# its hash is printed in the report so two machines can check they measured
# the same data.

# prng_bytes SEED N: exactly N pseudo-random bytes on stdout. CTR mode
# encrypts N zero bytes into N bytes: a finite pipeline, no SIGPIPE.
ZERO_IV=00000000000000000000000000000000
prng_bytes() {
  head -c "$2" /dev/zero | openssl enc -aes-128-ctr -nosalt -K "$(printf '%032x' "$1")" -iv "$ZERO_IV"
}

# gen_text SEED AWK-ARGS...: runs gen.awk on an endless stream of numbers.
# gen.awk exits when it has written enough, so openssl and od die of SIGPIPE
# by design: only awk's status counts.
gen_text() {
  local seed="$1" rc
  shift
  set +o pipefail
  openssl enc -aes-128-ctr -nosalt -K "$(printf '%032x' "$seed")" -iv "$ZERO_IV" < /dev/zero 2> /dev/null |
    od -An -v -tu2 --endian=little -w32 2> /dev/null |
    LC_ALL=C awk -f "$BENCH_SRC/gen.awk" "$@"
  rc=${PIPESTATUS[2]}
  set -o pipefail
  return "$rc"
}

# The generator's version: any change to the generator makes a new key.
gen_version() {
  cat "$BENCH_SRC/dataset.sh" "$BENCH_SRC/gen.awk" | sha256sum | cut -c1-12
}

# make_mixed DIR MIB: a volume of MIB MiB like an application's data:
#   db/      50% incompressible 64 MiB files (database pages, media)
#   logs/    25% log text in files of up to 128 MiB (compresses ~5x)
#   files/   25% small files of 1-60 KiB: logs, config, JSON, hex dumps
# plus two symlinks and an empty directory, so the tree is not only files.
make_mixed() {
  local dir="$1" mib="$2" left n i
  local random_mib=$((mib / 2)) text_mib=$((mib / 4))
  local small_mib=$((mib - random_mib - text_mib))
  mkdir -p "$dir/db" "$dir/logs" "$dir/files" "$dir/cache/empty" "$dir/tmp"
  left=$random_mib; i=0
  while [ "$left" -gt 0 ]; do
    n=$((left < 64 ? left : 64))
    prng_bytes $((1000 + i)) $((n * 1048576)) > "$dir/db/pages-$i.db"
    left=$((left - n)); i=$((i + 1))
  done
  left=$text_mib; i=0
  while [ "$left" -gt 0 ]; do
    n=$((left < 128 ? left : 128))
    gen_text $((2000 + i)) -v mode=log -v bytes=$((n * 1048576)) > "$dir/logs/app-$i.log"
    left=$((left - n)); i=$((i + 1))
  done
  gen_text 3000 -v mode=tree -v dir="$dir/files" -v bytes=$((small_mib * 1048576)) \
    -v min=1024 -v max=$((60 * 1024)) > /dev/null
  ln -s ../logs/app-0.log "$dir/tmp/current.log"
  ln -s db/pages-0.db "$dir/latest"
}

# make_small DIR COUNT: COUNT files of 1-8 KiB (a source tree, a mail
# spool): here the per-file costs dominate, not the bytes.
make_small() {
  gen_text 4000 -v mode=tree -v dir="$1/files" -v count="$2" -v min=1024 -v max=8192 > /dev/null
}

# dataset KIND: makes sure the dataset is cached and sets DS_DIR (the tree)
# and DS_MANIFEST (its manifest). KIND is mixed or small.
dataset() {
  local kind="$1" base key t0
  case "$kind" in
    mixed) base="mixed-${BENCH_SIZE_MB}m" ;;
    small) base="small-${BENCH_SMALL_FILES}f" ;;
  esac
  key="$base-g$(gen_version)"
  DS_DIR="$BENCH_DIR/datasets/$key"
  DS_MANIFEST="$DS_DIR.manifest"
  if [ -d "$DS_DIR" ] && [ -s "$DS_MANIFEST" ]; then
    note "dataset $kind: cached in $DS_DIR"
    return 0
  fi
  # Older generations of the same dataset are only wasted space now.
  rm -rf "$BENCH_DIR/datasets/$base"-g*
  note "dataset $kind: generating $DS_DIR (once; cached for the next runs) ..."
  t0=$(now_ns)
  mkdir -p "$DS_DIR.tmp"
  (
    umask 022 # modes are part of the manifest: the same on every machine
    case "$kind" in
      mixed) make_mixed "$DS_DIR.tmp" "$BENCH_SIZE_MB" ;;
      small) make_small "$DS_DIR.tmp" "$BENCH_SMALL_FILES" ;;
    esac
  )
  manifest "$DS_DIR.tmp" > "$DS_DIR.tmp.manifest"
  mv "$DS_DIR.tmp" "$DS_DIR"
  mv "$DS_DIR.tmp.manifest" "$DS_MANIFEST"
  note "dataset $kind: generated in $(secs_since "$t0") s"
}
