#!/usr/bin/env bash
# Creates the demo volumes that examples/*.yaml snapshot. Idempotent: run it
# as often as you like; existing files are rewritten with the same content.
#
#   DEMO_ROOT=/tmp/volsnap-demo bash examples/demo-data.sh
set -euo pipefail

root="${DEMO_ROOT:-/tmp/volsnap-demo}"
data="$root/app/data"
config="$root/app/config"
mkdir -p "$data/db" "$data/uploads/2026" "$data/empty" "$config"

printf 'id,name\n1,alice\n2,bob\n' > "$data/db/users.csv"
printf 'hello from volsnap\n' > "$data/uploads/2026/greeting.txt"
# 1 MiB of random bytes, written once (kept on later runs).
if [ ! -s "$data/uploads/blob.bin" ]; then
  head -c 1048576 /dev/urandom > "$data/uploads/blob.bin"
fi
chmod 0640 "$data/db/users.csv"

cat > "$config/app.conf" <<'CONF'
# demo application configuration
listen = 0.0.0.0:8080
data_dir = /var/lib/app
CONF
# Symlinks are captured as links, never followed.
ln -sfn app.conf "$config/current.conf"
ln -sfn ../data/db "$config/db-link"

echo "demo data ready under $root:"
find "$root" -mindepth 1 | sort | sed 's/^/  /'
