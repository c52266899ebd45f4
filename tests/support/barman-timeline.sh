#!/usr/bin/env bash
# Real barman-cloud archive with a timeline switch, for tests: a PostgreSQL
# 15 primary archives WAL with barman-cloud-wal-archive and takes a base
# backup with barman-cloud-backup; a streaming standby made with
# pg_basebackup is promoted after the primary stops (timeline 2, with its
# .history file); the new primary takes the second base backup.
# Usage: barman-timeline.sh ENDPOINT BUCKET WORKDIR   (as root; PostgreSQL runs as `postgres`)
set -euo pipefail
endpoint=$1 bucket=$2 work=$3
. "$(dirname "$0")/pg-lib.sh"
p1=$(free_port); p2=$(free_port)
dest="s3://$bucket/cnpg/"
archive=". $work/s3.env \&\& barman-cloud-wal-archive --endpoint-url $endpoint -z $dest shared-pg %p"
cleanup() {
  as_pg "pg_ctl -D $work/primary -m immediate stop" >/dev/null 2>&1 || true
  as_pg "pg_ctl -D $work/standby -m immediate stop" >/dev/null 2>&1 || true
}
trap cleanup EXIT

as_pg "initdb -D $work/primary -A trust -U postgres" >/dev/null
cat >>"$work/primary/postgresql.conf" <<CONF
port = $p1
unix_socket_directories = '$work'
listen_addresses = ''
wal_level = replica
max_wal_senders = 4
archive_mode = on
archive_command = '. $work/s3.env && barman-cloud-wal-archive --endpoint-url $endpoint -z $dest shared-pg %p'
CONF
echo "local replication all trust" >>"$work/primary/pg_hba.conf"
as_pg "pg_ctl -D $work/primary -w -l $work/primary.log start" >/dev/null
sql() { as_pg "psql -h $work -p $1 -U postgres -qAt -c \"$2\""; }
backup() { as_pg ". $work/s3.env && barman-cloud-backup --endpoint-url $endpoint -z --immediate-checkpoint -h $work -p $1 -U postgres $dest shared-pg"; }
archived() { # waits until the server's current WAL file before the switch is archived
  for _ in $(seq 100); do
    [ "$(sql "$1" "select last_failed_wal is null or last_archived_time > last_failed_time from pg_stat_archiver")" = t ] && return 0
    sleep 0.1
  done
}

sql $p1 "create table t(id serial, note text)"
sql $p1 "insert into t(note) values ('one')"
backup $p1
for i in 1 2 3; do sql $p1 "insert into t(note) values ('tl1 $i')"; sql $p1 "select pg_switch_wal()" >/dev/null; sleep 1; done
archived $p1

as_pg "pg_basebackup -h $work -p $p1 -U postgres -D $work/standby -R -X stream" >/dev/null
sed -i "s/^port = .*/port = $p2/" "$work/standby/postgresql.conf"
as_pg "pg_ctl -D $work/standby -w -l $work/standby.log start" >/dev/null
sql $p1 "insert into t(note) values ('before failover')"
sleep 1
as_pg "pg_ctl -D $work/primary -m fast -w stop" >/dev/null
as_pg "pg_ctl -D $work/standby -w promote" >/dev/null
for _ in $(seq 50); do [ "$(sql $p2 "select pg_is_in_recovery()")" = f ] && break; sleep 0.1; done

for i in 1 2; do sql $p2 "insert into t(note) values ('tl2 $i')"; sql $p2 "select pg_switch_wal()" >/dev/null; sleep 1; done
backup $p2
for i in 1 2; do sql $p2 "insert into t(note) values ('after $i')"; sql $p2 "select pg_switch_wal()" >/dev/null; sleep 1; done
archived $p2
sleep 1
as_pg "pg_ctl -D $work/standby -m fast -w stop" >/dev/null
