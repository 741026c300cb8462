#!/usr/bin/env bash
# Prints the Markdown report of one `make bench` run from its results
# directory (results.tsv: one line per measured run; meta.sh; machine.md).
# bench/bench.sh calls it at the end; run it again to re-print a report:
#
#   bash bench/report.sh /var/tmp/volsnap-bench/results/20261202T110000Z
# shellcheck disable=SC2016 # the backquotes are Markdown code spans
set -euo pipefail
RES="${1:?usage: report.sh RESULTS-DIR}"
# shellcheck source=/dev/null
source "$RES/meta.sh"
: "${runs:?$RES/meta.sh does not say how many runs were made}"

# Per (dataset, case, tool): median, min and max seconds, median peak RSS
# (KiB) and median archive size (bytes), over the runs.
STATS=$(awk -F '\t' '
  { k = $1 "\t" $2 "\t" $3; n[k]++; t[k, n[k]] = $5; r[k, n[k]] = $6; z[k, n[k]] = $7; keys[k] = 1 }
  function median(a, k, m,   i, j, v, tmp) {
    for (i = 1; i <= m; i++) v[i] = a[k, i] + 0
    for (i = 2; i <= m; i++) for (j = i; j > 1 && v[j - 1] > v[j]; j--) { tmp = v[j]; v[j] = v[j - 1]; v[j - 1] = tmp }
    lo = v[1]; hi = v[m]
    return (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
  }
  END {
    for (k in keys) {
      m = n[k]
      zs = median(z, k, m); rs = median(r, k, m); ts = median(t, k, m)
      printf "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", k, ts, lo, hi, rs, zs, m
    }
  }' "$RES/results.tsv")

# stat KIND GROUP TOOL FIELD: FIELD of the STATS line (4 median s, 5 min s,
# 6 max s, 7 RSS KiB, 8 size bytes, 9 runs); empty when not measured.
stat_of() {
  awk -F '\t' -v k="$1" -v g="$2" -v t="$3" -v f="$4" '$1 == k && $2 == g && $3 == t { print $f }' <<< "$STATS"
}

ratio() { # A B: A / B as "0.83×", "-" when either is missing or zero
  awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f×", a / b; else print "–" }'
}

# row KIND CASE-LABEL GROUP TOOL TOOL-LABEL [VS-GROUP]: one table row; the
# ratio columns divide volsnap's medians in GROUP (or VS-GROUP: the in-place
# restore is compared with a new-directory extraction) by this row's.
row() {
  local kind="$1" case_label="$2" group="$3" tool="$4" label="$5"
  local bytes_var="${kind}_bytes" med lo hi rss size mibs range vt vr vz
  med=$(stat_of "$kind" "$group" "$tool" 4)
  [ -n "$med" ] || return 0
  lo=$(stat_of "$kind" "$group" "$tool" 5)
  hi=$(stat_of "$kind" "$group" "$tool" 6)
  rss=$(stat_of "$kind" "$group" "$tool" 7)
  size=$(stat_of "$kind" "$group" "$tool" 8)
  mibs=$(awk -v d="${!bytes_var}" -v s="$med" 'BEGIN { printf "%.0f", d / 1048576 / s }')
  range=$(awk -v a="$lo" -v b="$hi" -v n="$runs" 'BEGIN { if (n > 1) printf " (%.1f–%.1f)", a, b }')
  local size_cell="–" ratios="– | – | –"
  [ "$size" = 0 ] || size_cell=$(awk -v z="$size" 'BEGIN { printf "%.1f", z / 1048576 }')
  if [ "$tool" != volsnap ]; then
    local vg="${6:-$group}"
    vt=$(stat_of "$kind" "$vg" volsnap 4)
    vr=$(stat_of "$kind" "$vg" volsnap 7)
    vz=$(stat_of "$kind" "$vg" volsnap 8)
    ratios="$(ratio "$vt" "$med") | $(ratio "$vz" "$size") | $(ratio "$vr" "$rss")"
  fi
  printf '| %s | %s | %s | %.2f%s | %s | %s | %s | %s |\n' "$DS_LABEL" "$case_label" "$label" "$med" "$range" "$mibs" \
    "$size_cell" "$(awk -v r="$rss" 'BEGIN { printf "%.1f", r / 1024 }')" "$ratios"
}

cat "$RES/machine.md"
echo
echo "| dataset | case | tool | time s | MiB/s | archive MiB | peak RSS MiB | volsnap time ÷ this | volsnap size ÷ this | volsnap RSS ÷ this |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for kind in mixed small; do
  bytes_var="${kind}_bytes" files_var="${kind}_files"
  [ -n "${!bytes_var:-}" ] || continue
  if [ "$kind" = mixed ]; then
    DS_LABEL="mixed $(awk -v d="${!bytes_var}" 'BEGIN { printf "%.0f", d / 1048576 }') MiB"
  else
    DS_LABEL="small files ×${!files_var}"
  fi
  row "$kind" "capture gzip" capture-gzip volsnap "volsnap"
  row "$kind" "capture gzip" capture-gzip "tar -czf" '`tar -czf` + fsync'
  row "$kind" "capture gzip" capture-gzip "tar | pigz -6" '`tar -cf - \| pigz -6` + fsync'
  row "$kind" "capture zstd" capture-zstd volsnap "volsnap"
  row "$kind" "capture zstd" capture-zstd "tar | zstd -3 -T0" '`tar -cf - \| zstd -3 -T0` + fsync'
  row "$kind" "restore gzip, new dir" restore-gzip volsnap "volsnap"
  row "$kind" "restore gzip, new dir" restore-gzip "tar -xzf" '`tar -xzf` + `sync -f`'
  row "$kind" "restore gzip, new dir" restore-gzip "pigz -dc | tar -x" '`pigz -dc \| tar -x` + `sync -f`'
  row "$kind" "restore zstd, new dir" restore-zstd volsnap "volsnap"
  row "$kind" "restore zstd, new dir" restore-zstd "zstd -dc | tar -x" '`zstd -dc \| tar -x` + `sync -f`'
  row "$kind" "restore gzip in place, keepPreRestore" restore-inplace volsnap "volsnap"
  row "$kind" "restore gzip in place, keepPreRestore" restore-gzip "pigz -dc | tar -x" '`pigz -dc \| tar -x` + `sync -f`, new dir' restore-inplace
done
echo
echo "Medians of $runs run(s) (fastest–slowest in brackets); MiB/s is MiB of file data in the dataset per second."
echo "Ratios: volsnap's median divided by the row's; below 1 volsnap is faster, smaller or leaner."
for kind in mixed small; do
  bytes_var="${kind}_bytes" files_var="${kind}_files" dirs_var="${kind}_dirs" man_var="${kind}_manifest"
  name_var="${kind}_name" gz_var="${kind}_gz_archive" zst_var="${kind}_zst_archive"
  [ -n "${!bytes_var:-}" ] || continue
  printf -- '- %s: %s bytes in %s files, %s directories (%s, manifest md5 %s); restores read volsnap archives of %.1f MiB (gzip) and %.1f MiB (zstd)\n' \
    "$kind" "${!bytes_var}" "${!files_var}" "${!dirs_var}" "${!name_var}" "${!man_var}" \
    "$(awk -v z="${!gz_var}" 'BEGIN { print z / 1048576 }')" "$(awk -v z="${!zst_var}" 'BEGIN { print z / 1048576 }')"
done
if [ -n "${latency_us:-}" ]; then
  tr ' ' '\n' <<< "$latency_us" | sort -n | awk '{ v[NR] = $1 } END {
    med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "- daemon, manifest dropped -> status Completed: median %.0f ms (min %.0f, max %.0f) over %d drops of a one-file volume\n", med / 1000, v[1] / 1000, v[NR] / 1000, NR }'
fi
if [ -n "${total_secs:-}" ]; then
  # The rest is untimed: dataset generation (when not cached), copying,
  # the manifest checks, removing restored trees, the syncs between cases.
  awk -F '\t' -v total="$total_secs" -v runs="$runs" '{ t += $5 } END {
    printf "- bench/bench.sh ran for %.1f min, %.1f min of it in the %d timed runs of the cases above\n", total / 60, t / 60, NR }' "$RES/results.tsv"
fi
