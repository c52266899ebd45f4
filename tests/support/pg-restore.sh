#!/usr/bin/env bash
# Restores a barman-cloud backup the way CNPG's full-recovery Job does:
# barman-cloud-restore of the pinned backup ID into a new data directory,
# `restore_command` with barman-cloud-wal-restore, `recovery_target_time`
# exactly as given (CNPG writes the manifest's targetTime there), promote
# at the target. Prints the notes of table t once promoted; when PostgreSQL
# stops instead, prints its FATAL line and exits 3.
# Usage: pg-restore.sh ENDPOINT DEST_URL SERVER BACKUP_ID TARGET WORKDIR   (as root)
set -euo pipefail
endpoint=$1 dest=$2 server=$3 backup=$4 target=$5 work=$6
. "$(dirname "$0")/pg-lib.sh"
port=$(free_port)
data="$work/data"
trap 'as_pg "pg_ctl -D $data -m immediate stop" >/dev/null 2>&1 || true' EXIT
as_pg ". $work/s3.env && barman-cloud-restore --endpoint-url $endpoint $dest $server $backup $data"
chmod 700 "$data"
touch "$data/recovery.signal" && chown postgres "$data/recovery.signal"
cat >>"$data/postgresql.auto.conf" <<CONF
port = $port
unix_socket_directories = '$work'
listen_addresses = ''
archive_mode = off
restore_command = '. $work/s3.env && barman-cloud-wal-restore --endpoint-url $endpoint $dest $server %f %p'
recovery_target_time = '$target'
recovery_target_action = 'promote'
CONF
# PostgreSQL's own reasons to stop; not the refusals our polling connections get.
fatal() { grep -E 'FATAL|invalid value for parameter' "$work/restore.log" 2>/dev/null | grep -vE 'the database system is (starting up|not yet accepting connections)'; }
stopped() { fatal | head -1 || true; exit 3; }
as_pg "pg_ctl -D $data -W -l $work/restore.log start" >/dev/null
for _ in $(seq 600); do
  [ -n "$(fatal)" ] && stopped
  if [ "$(as_pg "psql -h $work -p $port -U postgres -qAt -c 'select pg_is_in_recovery()'" 2>/dev/null)" = f ]; then
    as_pg "psql -h $work -p $port -U postgres -qAt -c 'select note from t order by at'"
    exit 0
  fi
  sleep 0.1
done
echo "not promoted within 60 s" >&2
tail -5 "$work/restore.log" >&2
exit 4
