//! `drgit backups status`: the fixture's real catalog, and a synthetic
//! store laid out like the real bucket (barman backup.info and WAL names,
//! etcd snapshot names, kanidmd gzip JSON) that is healthy, then broken one
//! way at a time; `--check` must say so through its exit status.

mod common;

use std::path::Path;

use common::{Fixture, redact};
use jiff::{SignedDuration, Timestamp};

const NOW: &str = "2026-11-26T04:00:00Z";

fn set_mtime(path: &Path, t: Timestamp) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(t.as_nanosecond() as u64),
    )
    .unwrap();
}

fn put(root: &Path, key: &str, bytes: &[u8], t: Timestamp) {
    let p = root.join(key);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, bytes).unwrap();
    set_mtime(&p, t);
}

fn seg(pos: u64) -> String {
    format!("{:08X}{:08X}{:08X}", 1, pos / 256, pos % 256)
}

/// Segment `pos` with one commit a minute before it was archived: real
/// WAL for the segments drgit reads (a chain's last), a token elsewhere.
fn put_segment(root: &Path, pos: u64, t: Timestamp, real: bool) {
    let name = seg(pos);
    let bytes = if real {
        common::walgen::segment_gz(&name, &[t - SignedDuration::from_mins(1)])
    } else {
        b"wal".to_vec()
    };
    put(
        root,
        &format!("cnpg/shared-pg/wals/{}/{name}.gz", &name[..16]),
        &bytes,
        t,
    );
}

fn gz_json(version: &str) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(
        &mut enc,
        format!("{{\"version\":\"{version}\",\"db_s_uuid\":\"x\",\"entries\":[]}}").as_bytes(),
    )
    .unwrap();
    enc.finish().unwrap()
}

/// Eight daily base backups, hourly WAL, fourteen daily etcd and Kanidm
/// backups, the newest an hour before NOW.
fn healthy_store(root: &Path) {
    let now: Timestamp = NOW.parse().unwrap();
    let start = now - SignedDuration::from_hours(8 * 24);
    for h in 0..(8 * 24) {
        let t = start + SignedDuration::from_hours(h as i64 + 1);
        put_segment(root, h, t, h == 8 * 24 - 1);
    }
    for d in 0..8u64 {
        let begin = start + SignedDuration::from_hours((d * 24) as i64);
        let end = begin + SignedDuration::from_mins(5);
        let id = begin.strftime("%Y%m%dT%H%M%S").to_string();
        let info = format!(
            "backup_label=None\nbegin_time={}\nbegin_wal={}\nend_time={}\nend_wal={}\nstatus=DONE\ntimeline=1\nversion=150018\nxlog_segment_size=16777216\ncompression=gzip\n",
            begin.strftime("%Y-%m-%d %H:%M:%S.%f+00:00"),
            seg(d * 24),
            end.strftime("%Y-%m-%d %H:%M:%S.%f+00:00"),
            seg(d * 24),
        );
        put(
            root,
            &format!("cnpg/shared-pg/base/{id}/backup.info"),
            info.as_bytes(),
            end,
        );
        put(
            root,
            &format!("cnpg/shared-pg/base/{id}/data.tar.gz"),
            b"data",
            end,
        );
    }
    for d in 0..14u64 {
        let t = now - SignedDuration::from_hours((d * 24 + 1) as i64);
        let name = t.strftime("%Y%m%dT%H%M%SZ").to_string();
        put(root, &format!("etcd/{name}.db"), b"snapshot", t);
        put(root, &format!("kanidm/{name}.backup"), &gz_json("1.9"), t);
    }
}

fn status(f: &Fixture, store: &Path, check: bool) -> common::Run {
    let mut args = vec![
        "--backup-url",
        store.to_str().unwrap(),
        "--json",
        "backups",
        "status",
    ];
    if check {
        args.push("--check");
    }
    f.drgit_env(&args, &[("DRGIT_NOW", NOW)])
}

fn problems(run: &common::Run) -> Vec<String> {
    run.json()["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn fixture_report() {
    let f = Fixture::new();
    let run = f.drgit(&["backups", "status"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    insta::assert_snapshot!(redact(&run.stdout, &f));
    let run = f.drgit(&["backups", "status", "--check"]);
    assert_eq!(run.code, 1, "the fixture's backups span minutes, not days");
    assert!(run.stderr.contains("3 problem(s)"), "{}", run.stderr);
}

#[test]
fn now_is_shown_to_the_second() {
    // A clock read mid-second, as a real one is.
    let f = Fixture::new();
    let run = f.drgit_env(
        &["backups", "status"],
        &[("DRGIT_NOW", "2026-11-26T04:00:00.812802911Z")],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("(now 2026-11-26T04:00:00Z)"),
        "{}",
        run.stdout
    );
    let run = f.drgit_env(
        &[
            "pg-recover",
            "--target-time",
            "2026-11-27T00:00:00Z",
            "--dry-run",
        ],
        &[("DRGIT_NOW", "2026-11-26T04:00:00.812802911Z")],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("(now is 2026-11-26T04:00:00Z)"),
        "{}",
        run.stderr
    );
}

#[test]
fn healthy_store_passes_the_check() {
    let f = Fixture::new();
    let store = f.dir.path().join("healthy");
    healthy_store(&store);
    let run = status(&f, &store, true);
    assert_eq!(run.code, 0, "{:?}\n{}", problems(&run), run.stderr);
    let out = run.json();
    assert_eq!(out["postgres"][0]["server_name"], "shared-pg");
    assert_eq!(out["postgres"][0]["active"], true);
    assert_eq!(out["postgres"][0]["done"], 8);
    assert_eq!(out["postgres"][0]["wal_segments"], 192);
    assert_eq!(out["etcd"]["count"], 14);
    assert_eq!(out["kanidm"]["items"][13]["version"], "1.9");
    assert_eq!(out["kanidm"]["items"][13]["gzip"], true);
    let human = f.drgit_env(
        &["--backup-url", store.to_str().unwrap(), "backups", "status"],
        &[("DRGIT_NOW", NOW)],
    );
    assert!(human.stdout.contains("No problems."), "{}", human.stdout);
    assert!(human.stdout.contains("|B█████"), "{}", human.stdout);
}

#[test]
fn each_kind_of_trouble_is_named() {
    let now: Timestamp = NOW.parse().unwrap();
    type Break = fn(&Path, Timestamp);
    let cases: Vec<(&str, Break, &str)> = vec![
        (
            "failed base backup",
            |s, _| {
                let dir = std::fs::read_dir(s.join("cnpg/shared-pg/base"))
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .min()
                    .unwrap();
                let info = dir.join("backup.info");
                let t = std::fs::read_to_string(&info)
                    .unwrap()
                    .replace("status=DONE", "status=FAILED");
                std::fs::write(&info, t).unwrap();
            },
            "base backups not DONE",
        ),
        (
            "wal gap",
            |s, now| {
                std::fs::remove_file(s.join(format!(
                    "cnpg/shared-pg/wals/{}/{}.gz",
                    &seg(100)[..16],
                    seg(100)
                )))
                .unwrap();
                // The chain before the gap now ends at 99: drgit reads it.
                let start = now - SignedDuration::from_hours(8 * 24);
                put_segment(s, 99, start + SignedDuration::from_hours(100), true);
            },
            "WAL gap: 1 segment(s) missing from 000000010000000000000064",
        ),
        (
            "archiving stopped",
            |s, now| {
                for h in 180..192 {
                    let p = s.join(format!(
                        "cnpg/shared-pg/wals/{}/{}.gz",
                        &seg(h)[..16],
                        seg(h)
                    ));
                    set_mtime(&p, now - SignedDuration::from_hours(30));
                }
            },
            "no WAL archived for 12h 0m: is archiving stopped?",
        ),
        (
            "stale etcd",
            |s, now| {
                for e in std::fs::read_dir(s.join("etcd")).unwrap() {
                    let p = e.unwrap().path();
                    let t = drgit::backup::kinds::time_from_name(p.to_str().unwrap()).unwrap();
                    if now.duration_since(t) < SignedDuration::from_hours(72) {
                        std::fs::remove_file(p).unwrap();
                    }
                }
            },
            "etcd: the newest backup is 3d 1h old",
        ),
        (
            "old kanidm version",
            |s, _| {
                let newest = std::fs::read_dir(s.join("kanidm"))
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .max()
                    .unwrap();
                std::fs::write(newest, gz_json("1.8")).unwrap();
            },
            "was written by kanidmd 1.8, but the restore image is docker.io/kanidm/server:1.9.1",
        ),
        (
            "retention exceeded",
            |s, now| {
                let t = now - SignedDuration::from_hours(20 * 24);
                put(
                    s,
                    &format!("etcd/{}.db", t.strftime("%Y%m%dT%H%M%SZ")),
                    b"old",
                    t,
                );
            },
            "past the 14-day retention",
        ),
    ];
    for (name, break_it, expect) in cases {
        let f = Fixture::new();
        let store = f.dir.path().join("store");
        healthy_store(&store);
        break_it(&store, now);
        let run = status(&f, &store, true);
        assert_eq!(run.code, 1, "{name}: {}", run.stderr);
        let p = problems(&run);
        assert!(p.iter().any(|x| x.contains(expect)), "{name}: {p:#?}");
        assert_eq!(p.len(), 1, "{name}: only that problem: {p:#?}");
    }
}
