#!/usr/bin/env bash
# Real barman-cloud archive for point-in-time tests: a PostgreSQL 15
# primary archives WAL with barman-cloud-wal-archive (bzip2) and takes one
# base backup with barman-cloud-backup; then rows `a` and `b` commit 1.5 s
# apart, and the segment holding them is archived 4 s after `b` (as
# archive_timeout would): the archive's last commit is `b`, well before the
# segment's LastModified. Prints each row's insert time (UTC, `YYYY-MM-DD HH:MM:SS.ffffff`).
# Usage: barman-pitr.sh ENDPOINT BUCKET WORKDIR   (as root; PostgreSQL runs as `postgres`)
set -euo pipefail
endpoint=$1 bucket=$2 work=$3
. "$(dirname "$0")/pg-lib.sh"
port=$(free_port)
dest="s3://$bucket/cnpg/"
trap 'as_pg "pg_ctl -D $work/primary -m immediate stop" >/dev/null 2>&1 || true' EXIT

as_pg "initdb -D $work/primary -A trust -U postgres" >/dev/null
cat >>"$work/primary/postgresql.conf" <<CONF
port = $port
unix_socket_directories = '$work'
listen_addresses = ''
wal_level = replica
archive_mode = on
archive_command = '. $work/s3.env && barman-cloud-wal-archive --endpoint-url $endpoint -j $dest shared-pg %p'
CONF
as_pg "pg_ctl -D $work/primary -w -l $work/primary.log start" >/dev/null
sql() { as_pg "psql -h $work -p $port -U postgres -qAt -c \"$1\""; }

sql "create table t(note text, at timestamptz default clock_timestamp())"
sql "insert into t(note) values ('zero')"
as_pg ". $work/s3.env && barman-cloud-backup --endpoint-url $endpoint -j --immediate-checkpoint -h $work -p $port -U postgres $dest shared-pg"
sql "insert into t(note) values ('a')"
sleep 1.5
sql "insert into t(note) values ('b')"
sleep 4
sql "select pg_switch_wal()" >/dev/null
for _ in $(seq 100); do
  [ "$(sql "select last_archived_wal >= pg_walfile_name(pg_current_wal_lsn() - 1) from pg_stat_archiver")" = t ] && break
  sleep 0.1
done
sql "select note || ' ' || to_char(at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') from t order by at"
as_pg "pg_ctl -D $work/primary -m fast -w stop" >/dev/null
