#!/usr/bin/env bash
# Writes one real, full 16 MiB WAL segment named NAME (24 hex digits,
# timeline 1) to OUT, gzip-compressed as barman-cloud-wal-archive -z
# stores it: a PostgreSQL 15 started at that position (pg_resetwal -l)
# runs pgbench through the whole segment, so it holds thousands of
# commits, the worst case for reading a window's end.
# Usage: benches/real-wal-segment.sh NAME OUT   (as root; PostgreSQL runs as `postgres`)
set -euo pipefail
name=$1 out=$2
work=$(mktemp -d /tmp/drgit-wal.XXXXXX)
. "$(dirname "$0")/../tests/support/pg-lib.sh"
trap 'as_pg "pg_ctl -D $work/data -m immediate stop" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
log=$((16#${name:8:8})) seg=$((16#${name:16:8}))
start=$(printf '00000001%08X%08X' "$log" $((seg - 8)))
as_pg "initdb -D $work/data -A trust -U postgres" >/dev/null
as_pg "pg_resetwal -l $start -D $work/data" >/dev/null
mkdir -p "$work/archive" && chmod 777 "$work/archive"
port=$(free_port)
cat >>"$work/data/postgresql.conf" <<CONF
port = $port
unix_socket_directories = '$work'
listen_addresses = ''
wal_level = replica
archive_mode = on
archive_command = 'cp %p $work/archive/%f'
CONF
as_pg "pg_ctl -D $work/data -w -l $work/pg.log start" >/dev/null
sql() { as_pg "psql -h $work -p $port -U postgres -qAt -c \"$1\""; }
as_pg "pgbench -h $work -p $port -U postgres -i -s 1 -q postgres" >/dev/null 2>&1
before=$(printf '00000001%08X%08X' "$log" $((seg - 1)))
until [ "$(sql "select pg_walfile_name(pg_current_wal_lsn() + 1)")" \> "$before" ]; do
  sql "select txid_current()" >/dev/null; sql "select pg_switch_wal()" >/dev/null
done
until [ "$(sql "select pg_walfile_name(pg_current_wal_lsn() + 1)")" \> "$name" ]; do
  as_pg "pgbench -h $work -p $port -U postgres -T 2 -c 4 postgres" >/dev/null 2>&1
done
for _ in $(seq 100); do [ -f "$work/archive/$name" ] && break; sleep 0.1; done
python3 -c 'import gzip, sys; open(sys.argv[2], "wb").write(gzip.compress(open(sys.argv[1], "rb").read()))' "$work/archive/$name" "$out"
echo "$name: $(/usr/lib/postgresql/15/bin/pg_waldump "$work/archive/$name" 2>/dev/null | grep -c "desc: COMMIT") commits" >&2
