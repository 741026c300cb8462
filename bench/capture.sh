#!/usr/bin/env bash
# Capture benchmark: volsnap against plain GNU tar + gzip / pigz / zstd on the
# same mixed dataset, plus file-drop -> Completed latency of the daemon.
#
#   make bench                              # release build, then this script
#   BENCH_SIZE_MB=512 bash bench/capture.sh # smaller dataset
#
# Environment:
#   BENCH_SIZE_MB   dataset size in MiB (default 2048)
#   BENCH_DIR       where the dataset and outputs live (default /var/tmp/volsnap-bench)
#   BENCH_DROPS     number of manifests dropped for the latency test (default 10)
#   SKIP_BUILD=1    use the existing target/release/volsnap
#   BENCH_KEEP=1    keep the archives and logs under $BENCH_DIR/out
#
# Prints numbers only: it never fails because something is slow.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SIZE_MB="${BENCH_SIZE_MB:-2048}"
DIR="${BENCH_DIR:-/var/tmp/volsnap-bench}"
DROPS="${BENCH_DROPS:-10}"
DATA="$DIR/data-${SIZE_MB}m"
OUT="$DIR/out"
BIN="$PWD/target/release/volsnap"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --quiet
fi
[ -x "$BIN" ] || { echo "no release binary at $BIN" >&2; exit 1; }

TIME=/usr/bin/time
if [ ! -x "$TIME" ]; then
  echo "note: GNU time (/usr/bin/time) is missing: peak RSS is not measured (make bench-deps installs it)" >&2
  TIME=""
fi

# ---------------------------------------------------------------- dataset
make_dataset() {
  local random_mb=$((SIZE_MB * 30 / 100))
  local text_mb=$((SIZE_MB * 45 / 100))
  local small_mb=$((SIZE_MB - random_mb - text_mb))
  echo "creating the ${SIZE_MB} MiB dataset in $DATA (once): ${random_mb} MiB random, ${text_mb} MiB text, ${small_mb} MiB small files" >&2
  rm -rf "$DATA.tmp"
  mkdir -p "$DATA.tmp/random" "$DATA.tmp/text" "$DATA.tmp/small"
  # Incompressible data, in 64 MiB files.
  local left=$random_mb i=0
  while [ "$left" -gt 0 ]; do
    local n=$((left < 64 ? left : 64))
    head -c "$((n * 1048576))" /dev/urandom > "$DATA.tmp/random/blob-$i.bin"
    left=$((left - n)); i=$((i + 1))
  done
  # Log-like text (compresses roughly 5-10x), in 128 MiB files.
  left=$text_mb; i=0
  while [ "$left" -gt 0 ]; do
    n=$((left < 128 ? left : 128))
    awk -v bytes="$((n * 1048576))" -v seed="$i" 'BEGIN {
      srand(seed); split("GET POST PUT DELETE", m, " "); split("200 200 200 201 204 301 404 500", s, " ");
      split("users orders items carts sessions invoices", r, " "); total = 0;
      while (total < bytes) {
        line = sprintf("2026-11-%02dT%02d:%02d:%02d.%03dZ INFO http %s /api/v1/%s/%d status=%s bytes=%d ms=%d trace=%08x",
          1 + int(rand() * 28), int(rand() * 24), int(rand() * 60), int(rand() * 60), int(rand() * 1000),
          m[1 + int(rand() * 4)], r[1 + int(rand() * 6)], int(rand() * 100000), s[1 + int(rand() * 8)],
          int(rand() * 65536), int(rand() * 2000), int(rand() * 4294967295));
        print line; total += length(line) + 1;
      }
    }' > "$DATA.tmp/text/app-$i.log"
    # Cut to size afterwards: `| head -c` could SIGPIPE awk under pipefail.
    truncate -s "$((n * 1048576))" "$DATA.tmp/text/app-$i.log"
    left=$((left - n)); i=$((i + 1))
  done
  # Many small files (1-16 KiB, mixed text), 250 per directory.
  awk -v bytes="$((small_mb * 1048576))" -v dir="$DATA.tmp/small" 'BEGIN {
    srand(42); total = 0; f = 0;
    while (total < bytes) {
      d = sprintf("%s/d%04d", dir, int(f / 250));
      if (f % 250 == 0) system("mkdir -p " d);
      path = sprintf("%s/f%06d.txt", d, f); size = 1024 + int(rand() * 15360); written = 0;
      while (written < size) {
        line = sprintf("key-%d = value %d %x", int(rand() * 1000), int(rand() * 1000000), int(rand() * 4294967295));
        print line > path; written += length(line) + 1;
      }
      close(path); total += written; f++;
    }
  }'
  mv "$DATA.tmp" "$DATA"
}
[ -d "$DATA" ] || make_dataset
DATA_BYTES=$(du -sb --apparent-size "$DATA" | cut -f1)
FILES=$(find "$DATA" -type f | wc -l)
echo "dataset: $DATA, $((DATA_BYTES / 1048576)) MiB in $FILES files" >&2
# Warm the page cache so every contender reads the same way.
find "$DATA" -type f -exec cat {} + > /dev/null

# ---------------------------------------------------------------- capture
rm -rf "$OUT"
mkdir -p "$OUT"
ROWS=()

# measure NAME OUTPUT_FILE COMMAND...: wall time, throughput, peak RSS, size.
measure() {
  local name="$1" output="$2"; shift 2
  local tf="$OUT/time.$$" secs rss_kib
  if [ -n "$TIME" ]; then
    if ! "$TIME" -f "%e %M" -o "$tf" "$@" > "$OUT/$name.log" 2>&1; then
      echo "warning: $name failed (see $OUT/$name.log)" >&2
      ROWS+=("$(printf '%-22s %9s %9s %9s %10s %7s' "$name" failed - - - -)"); return 0
    fi
    read -r secs rss_kib < <(tail -1 "$tf")
  else
    local t0 t1
    t0=$(date +%s%N)
    if ! "$@" > "$OUT/$name.log" 2>&1; then
      ROWS+=("$(printf '%-22s %9s %9s %9s %10s %7s' "$name" failed - - - -)"); return 0
    fi
    t1=$(date +%s%N)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
    rss_kib=0
  fi
  local size=0
  [ -f "$output" ] && size=$(stat -c %s "$output")
  ROWS+=("$(awk -v n="$name" -v s="$secs" -v r="$rss_kib" -v z="$size" -v d="$DATA_BYTES" 'BEGIN {
    mbps = (s > 0) ? d / 1048576 / s : 0;
    printf "%-22s %9.2f %9.0f %9.1f %10.1f %7.2f", n, s, mbps, r / 1024, z / 1048576, (z > 0) ? d / z : 0 }')")
}

volsnap_capture() {
  local compression="$1" ext="$2"
  local m="$OUT/manifests-$compression" s="$OUT/state-$compression"
  rm -rf "$m" "$s"; mkdir -p "$m"
  cat > "$m/bench.yaml" <<EOF
apiVersion: volsnap.dev/v1alpha1
kind: VolumeSnapshot
metadata:
  name: bench
spec:
  source:
    paths:
      - name: data
        path: $DATA
  compression: $compression
EOF
  measure "volsnap $compression" "$s/archives/default/bench.$ext" \
    "$BIN" run --once --manifests "$m" --state "$s" --allowed-root "$DIR"
}

volsnap_capture gzip tar.gz
volsnap_capture zstd tar.zst
measure "tar -czf (gzip)" "$OUT/gnu.tar.gz" tar -czf "$OUT/gnu.tar.gz" -C "$DATA" .
if command -v pigz > /dev/null; then
  measure "tar | pigz" "$OUT/gnu-pigz.tar.gz" bash -c "tar -cf - -C '$DATA' . | pigz > '$OUT/gnu-pigz.tar.gz'"
else
  echo "note: pigz is not installed (make bench-deps installs it): row skipped" >&2
fi
measure "tar --zstd -cf" "$OUT/gnu.tar.zst" tar --zstd -cf "$OUT/gnu.tar.zst" -C "$DATA" .

# ---------------------------------------------------------------- latency
# Daemon running; drop a small manifest; poll its status file for Completed.
LAT_M="$OUT/latency-manifests" LAT_S="$OUT/latency-state" LAT_D="$OUT/latency-data"
rm -rf "$LAT_M" "$LAT_S" "$LAT_D"
mkdir -p "$LAT_M" "$LAT_D/vol"
printf 'small volume\n' > "$LAT_D/vol/file.txt"
"$BIN" run --manifests "$LAT_M" --state "$LAT_S" --allowed-root "$LAT_D" > "$OUT/latency-daemon.log" 2>&1 &
DAEMON=$!
trap 'kill "$DAEMON" 2>/dev/null || true' EXIT
LAT=()
for i in $(seq 1 "$DROPS"); do
  tmp="$OUT/drop-$i.yaml"
  cat > "$tmp" <<EOF
apiVersion: volsnap.dev/v1alpha1
kind: VolumeSnapshot
metadata:
  name: drop-$i
spec:
  source:
    paths:
      - {name: vol, path: $LAT_D/vol}
EOF
  status="$LAT_S/status/default/volumesnapshots/drop-$i.yaml"
  t0=$(date +%s%N)
  mv "$tmp" "$LAT_M/drop-$i.yaml"
  while ! grep -qE '^  phase: (Completed|Failed)' "$status" 2> /dev/null; do
    if [ $(( ($(date +%s%N) - t0) / 1000000 )) -gt 60000 ]; then break; fi
    sleep 0.002
  done
  t1=$(date +%s%N)
  LAT+=("$(( (t1 - t0) / 1000 ))")
done
kill -TERM "$DAEMON" 2>/dev/null || true
wait "$DAEMON" 2>/dev/null || true
trap - EXIT
LAT_SUMMARY=$(printf '%s\n' "${LAT[@]}" | sort -n | awk '{ v[NR] = $1 } END {
  med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
  printf "median %.1f ms, max %.1f ms, min %.1f ms over %d drops", med / 1000, v[NR] / 1000, v[1] / 1000, NR }')

# ---------------------------------------------------------------- report
echo
echo "volsnap capture benchmark — $(nproc) cores, dataset $((DATA_BYTES / 1048576)) MiB / $FILES files ($DATA)"
echo "$("$BIN" --version 2>/dev/null || echo volsnap), $(tar --version | head -1), $(zstd --version 2>/dev/null | head -1)"
echo
printf '%-22s %9s %9s %9s %10s %7s\n' "tool" "wall s" "MiB/s" "RSS MiB" "size MiB" "ratio"
printf '%-22s %9s %9s %9s %10s %7s\n' "----" "------" "-----" "-------" "--------" "-----"
printf '%s\n' "${ROWS[@]}"
echo
echo "file drop -> Completed latency: $LAT_SUMMARY"

# The dataset is kept for the next run; the archives (several GiB) are not.
if [ "${BENCH_KEEP:-0}" != 1 ]; then rm -rf "$OUT"; fi
