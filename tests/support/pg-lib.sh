# Shared by the scripts that run a real PostgreSQL 15 and barman-cloud for
# the tests and benchmarks (sourced, not run): a work directory PostgreSQL
# can use, a free port, the S3 keys barman-cloud reads, and a way to run
# a command as `postgres` (PostgreSQL refuses to run as root).
# Needs: $work set.
mkdir -p "$work" && chmod 777 "$work"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cat >"$work/s3.env" <<ENV
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test} AWS_DEFAULT_REGION=us-east-1
ENV
chmod 644 "$work/s3.env"
as_pg() { su postgres -s /bin/bash -c "PATH=/usr/lib/postgresql/15/bin:/usr/bin:/bin; $*"; }
