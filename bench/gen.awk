# Deterministic text for the benchmark datasets (see bench/dataset.sh).
#
# Input: lines of 16 pseudo-random numbers 0-65535, as printed by
# `od -An -v -tu2 --endian=little -w32` from an AES-CTR stream. awk's own
# rand() is not used: mawk and gawk generate different sequences, and the
# datasets must be the same bytes on every machine. Every output line uses
# one input line ($1..$16) and only integer arithmetic below 2^53, so mawk
# and gawk print the same bytes (run with LC_ALL=C).
#
# mode=log  bytes=N                 N bytes of log text on stdout
# mode=tree dir=D count=N bytes=B min=A max=Z
#                                   files of A..Z bytes under D (250 per
#                                   directory, 10 directories per group)
#                                   until N files (count > 0) or B bytes
#                                   (bytes > 0) are written; prints
#                                   "files bytes" at the end
BEGIN {
  split("GET GET GET POST POST PUT DELETE PATCH", METHOD, " ")
  split("users orders items carts sessions invoices payments search", RES, " ")
  split("200 200 200 200 200 200 201 204 301 304 400 404 404 409 500 503", STATUS, " ")
  split("INFO INFO INFO INFO INFO INFO INFO INFO INFO INFO INFO DEBUG DEBUG WARN WARN ERROR", LEVEL, " ")
  split("api web worker scheduler auth billing", SVC, " ")
  split("alpha beta gamma delta cache pool timeout retries limit buffer path host port user level mode", WORD, " ")
  ms = 0; done = 0; total = 0; files = 0; need_file = 1
  bytes += 0; count += 0; min += 0; max += 0
}

# One log line, as an HTTP service writes them: timestamps only move forward.
function log_line(  t, s) {
  ms += $1 % 40
  t = int(ms / 1000); s = ms % 1000
  return sprintf("2026-11-%02dT%02d:%02d:%02d.%03dZ %-5s %s %s /api/v1/%s/%d status=%s bytes=%d ms=%d trace=%04x%04x%04x%04x",
    1 + int(t / 86400) % 28, int(t / 3600) % 24, int(t / 60) % 60, t % 60, s,
    LEVEL[1 + $2 % 16], SVC[1 + $3 % 6], METHOD[1 + $4 % 8], RES[1 + $5 % 8], $6 + 65536 * ($7 % 16),
    STATUS[1 + $8 % 16], $9, $10 % 2000, $11, $12, $13, $14)
}

# Small-file content: log lines, configuration, JSON records or a hex dump
# (the last compresses about 2x, like already-encoded binary data).
function content_line(kind) {
  if (kind == 0) return log_line()
  if (kind == 1) return sprintf("%s.%s.%s = %d  # %s", WORD[1 + $1 % 16], WORD[1 + $2 % 16], WORD[1 + $3 % 16], $4, WORD[1 + $5 % 16])
  if (kind == 2) return sprintf("{\"id\":%d,\"user\":\"%s%d\",\"score\":%d.%02d,\"tags\":[\"%s\",\"%s\"],\"active\":%s}",
    $1 + 65536 * ($2 % 256), WORD[1 + $3 % 16], $4 % 1000, $5 % 100, $6 % 100, WORD[1 + $7 % 16], WORD[1 + $8 % 16], ($9 % 2) ? "true" : "false")
  return sprintf("%08x: %04x %04x %04x %04x %04x %04x %04x %04x %04x %04x %04x %04x", written,
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
}

# Writes `line` plus newline to `out`, cut so the total is exactly `limit`;
# returns 1 when the limit is reached.
function emit(line, out, limit, sofar) {
  if (sofar + length(line) + 1 >= limit) {
    line = substr(line "\n", 1, limit - sofar)
    if (out == "") printf "%s", line; else printf "%s", line > out
    return 1
  }
  if (out == "") print line; else print line > out
  return 0
}

# Picks the next file's path, size and kind (size from the current input
# line); stops when the count or the byte budget is reached.
function new_file(  d) {
  if ((count > 0 && files >= count) || (bytes > 0 && total >= bytes)) { finish() }
  d = int(files / 250)
  if (files % 250 == 0) {
    dirpath = sprintf("%s/g%02d/d%03d", dir, int(d / 10), d)
    system("mkdir -p '" dirpath "'")
  }
  kind = files % 4
  path = sprintf("%s/f%05d.%s", dirpath, files, (kind == 0) ? "log" : (kind == 1) ? "conf" : (kind == 2) ? "json" : "hex")
  size = min + ($15 + 65536 * ($16 % 256)) % (max - min + 1)
  if (bytes > 0 && size > bytes - total) size = bytes - total
  written = 0
}

function finish() {
  print files, total
  done = 1
  exit
}

mode == "log" {
  line = log_line()
  if (emit(line, "", bytes, total)) exit
  total += length(line) + 1
}

mode == "tree" && !done {
  if (need_file) { new_file(); need_file = 0 }
  line = content_line(kind)
  if (emit(line, path, size, written)) {
    close(path)
    total += size; files++
    need_file = 1
    next
  }
  written += length(line) + 1
}
