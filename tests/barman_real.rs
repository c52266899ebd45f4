//! drgit against a real barman-cloud archive: PostgreSQL 15 archived by the
//! real `barman-cloud-wal-archive` and `barman-cloud-backup` into a real S3
//! server, across a failover to timeline 2 (tests/support/barman-timeline.sh).
//! drgit's catalog must agree with `barman-cloud-backup-list` and with the
//! objects themselves, then report the gap left by one deleted segment.

mod common;

use std::process::Command;

use common::s3_server::{KEY_ID, S3Server, SECRET};
use common::{Fixture, project};

const BUCKET: &str = "barman-real";

fn env(now: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", KEY_ID.into()),
        ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("DRGIT_NOW", now.into()),
    ]
}

fn run(f: &Fixture, args: &[&str], now: &str) -> common::Run {
    let e = env(now);
    let refs: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
    f.drgit_env(args, &refs)
}

#[test]
fn catalog_matches_barman_across_a_timeline_switch_and_finds_the_gap() {
    let s3 = S3Server::start(&[]);
    s3.create_bucket(BUCKET);
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(project().join("tests/support/barman-timeline.sh"))
        .args([
            &s3.endpoint,
            BUCKET,
            work.path().join("pg").to_str().unwrap(),
        ])
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "barman run: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // What barman itself says.
    let list = Command::new("barman-cloud-backup-list")
        .args([
            "--endpoint-url",
            &s3.endpoint,
            "--format",
            "json",
            &format!("s3://{BUCKET}/cnpg/"),
            "shared-pg",
        ])
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let barman: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let barman = barman["backups_list"].as_array().unwrap().clone();
    assert_eq!(barman.len(), 2);

    let f = Fixture::new();
    f.point_manifest_at(&format!("s3://{BUCKET}/cnpg/"));
    std::fs::write(
        f.repo().join("drgit.toml"),
        format!(
            "[backup]\nurl = \"s3://{BUCKET}/\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n",
            s3.endpoint
        ),
    )
    .unwrap();
    let now = jiff::Timestamp::now().to_string();
    let status = run(&f, &["--json", "backups", "status"], &now);
    assert_eq!(status.code, 0, "{}", status.stderr);
    let pg = &status.json()["postgres"][0];
    assert_eq!(pg["server_name"], "shared-pg");
    let ours = pg["backups"].as_array().unwrap();
    for (b, o) in barman.iter().zip(ours) {
        assert_eq!(b["backup_id"], o["id"]);
        assert_eq!(b["status"], o["status"]);
        assert_eq!(b["begin_wal"], o["begin_wal"]);
        assert_eq!(b["end_wal"], o["end_wal"]);
        assert_eq!(b["timeline"], o["timeline"]);
        let end = jiff::civil::DateTime::strptime(
            "%a %b %d %H:%M:%S %Y",
            b["end_time"].as_str().unwrap(),
        )
        .unwrap()
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .unwrap()
        .timestamp();
        let ours_end: jiff::Timestamp = o["end_time"].as_str().unwrap().parse().unwrap();
        assert_eq!(ours_end.as_second(), end.as_second());
    }
    assert_eq!(pg["timelines"], serde_json::json!(["1", "2"]));
    assert_eq!(pg["histories"], serde_json::json!(["00000002.history.gz"]));
    let tl = pg["timeline_details"].as_array().unwrap();
    assert_eq!(tl[0]["timeline"], 1);
    assert!(
        tl[0]["partial"][0]
            .as_str()
            .unwrap()
            .ends_with(".partial.gz"),
        "{tl:?}"
    );
    assert_eq!(tl[1]["timeline"], 2);
    assert_eq!(tl[1]["history"], true);
    // Segments: every WAL position with a plain segment object (not
    // .partial, .backup or .history); the switch segment may exist on both
    // timelines and counts once.
    let keys = s3_keys(&s3);
    let positions: std::collections::BTreeSet<String> = keys
        .iter()
        .map(|k| k.rsplit('/').next().unwrap())
        .filter(|name| name.len() == 27 && name.ends_with(".gz"))
        .map(|name| name[8..24].to_string())
        .collect();
    assert_eq!(pg["wal_segments"], positions.len());
    assert_eq!(pg["gaps"], serde_json::json!([]));
    assert_eq!(pg["windows"].as_array().unwrap().len(), 1);

    // Delete one timeline-1 segment after the first backup: a gap, two windows.
    let victim = keys
        .iter()
        .find(|k| k.ends_with("/000000010000000000000004.gz"))
        .expect("segment 4 on timeline 1")
        .clone();
    s3.delete(BUCKET, &victim);
    let status = run(&f, &["--json", "backups", "status", "--check"], &now);
    assert_eq!(status.code, 1);
    let pg = &status.json()["postgres"][0];
    assert_eq!(pg["gaps"][0]["first_missing"], "000000010000000000000004");
    assert_eq!(pg["gaps"][0]["after"], "000000010000000000000003");
    let windows = pg["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2, "{windows:?}");
    assert_eq!(windows[0]["backup"], barman[0]["backup_id"]);
    assert_eq!(windows[1]["backup"], barman[1]["backup_id"]);

    // A target between the windows is refused, naming the gap.
    let reach: jiff::Timestamp = pg["gaps"][0]["reach"].as_str().unwrap().parse().unwrap();
    let second: jiff::Timestamp = windows[1]["start"].as_str().unwrap().parse().unwrap();
    let target = reach + (second.duration_since(reach) / 2);
    let target = jiff::Timestamp::from_second(target.as_second()).unwrap();
    if target > reach && target < second {
        let r = run(
            &f,
            &[
                "pg-recover",
                "--target-time",
                &target.to_string(),
                "--dry-run",
            ],
            &now,
        );
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(r.stderr.contains("falls in a WAL gap"), "{}", r.stderr);
    }
    // A target in the second window recovers from the timeline-2 backup.
    // (The window's end, its last commit, is excluded: a microsecond before.)
    let end: jiff::Timestamp = windows[1]["end"].as_str().unwrap().parse().unwrap();
    let end = end - jiff::SignedDuration::from_micros(1);
    let r = run(
        &f,
        &[
            "--json",
            "pg-recover",
            "--target-time",
            &end.to_string(),
            "--dry-run",
        ],
        &now,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["base_backup"], barman[1]["backup_id"]);
}

fn s3_keys(s3: &S3Server) -> Vec<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, boto3\nfor p in boto3.client('s3', endpoint_url=sys.argv[1]).get_paginator('list_objects_v2').paginate(Bucket=sys.argv[2]):\n    for o in p.get('Contents', []): print(o['Key'])",
            &s3.endpoint,
            BUCKET,
        ])
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Runs tests/support/pg-restore.sh: (exit code, what it printed).
fn restore(
    s3: &S3Server,
    bucket: &str,
    backup: &str,
    target: &str,
    dir: &std::path::Path,
) -> (i32, String) {
    let out = Command::new(project().join("tests/support/pg-restore.sh"))
        .args([
            &s3.endpoint,
            &format!("s3://{bucket}/cnpg/"),
            "shared-pg",
            backup,
            target,
            dir.to_str().unwrap(),
        ])
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn postgres_restores_to_exactly_the_target_drgit_writes_and_no_further() {
    const PITR: &str = "barman-pitr";
    let s3 = S3Server::start(&[]);
    s3.create_bucket(PITR);
    let work = tempfile::tempdir().unwrap();
    let rows = common::pitr_archive(&s3.endpoint, PITR, &work.path().join("src"));
    let (a, b) = (rows["a"], rows["b"]);

    let f = Fixture::new();
    f.point_manifest_at(&format!("s3://{PITR}/cnpg/"));
    std::fs::write(
        f.repo().join("drgit.toml"),
        format!(
            "[backup]\nurl = \"s3://{PITR}/\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n",
            s3.endpoint
        ),
    )
    .unwrap();
    let now = jiff::Timestamp::now().to_string();

    // Between the two commits: drgit accepts it, and PostgreSQL, given
    // exactly what drgit writes, keeps `a` and not `b`.
    let between = a + jiff::SignedDuration::from_millis(750);
    let ok = run(
        &f,
        &[
            "--json",
            "pg-recover",
            "--target-time",
            &between.to_string(),
            "--dry-run",
        ],
        &now,
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let plan = ok.json();
    let written = plan["recovery_target_time"].as_str().unwrap().to_string();
    let backup = plan["base_backup"].as_str().unwrap().to_string();
    let diff = plan["diff"].as_str().unwrap();
    assert!(
        diff.contains(&format!("targetTime: \"{written}\"")),
        "{diff}"
    );
    assert!(diff.contains(&format!("backupID: \"{backup}\"")), "{diff}");
    // The window ends at `b`'s commit, read from the bzip2 WAL: a few
    // milliseconds after its insert, seconds before the segment was archived.
    let end: jiff::Timestamp = plan["catalog"]["windows"][0]["end"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        end >= b && end < b + jiff::SignedDuration::from_secs(1),
        "window end {end}, b at {b}"
    );
    let (code, notes) = restore(&s3, PITR, &backup, &written, &work.path().join("between"));
    assert_eq!(code, 0, "{notes}");
    assert_eq!(notes.trim(), "zero\na");

    // After the last commit but before the segment was archived: the old
    // window (up to LastModified) took it; PostgreSQL fails on it, so drgit
    // refuses it before anything changes.
    let after = b + jiff::SignedDuration::from_secs(2);
    let (code, log) = restore(
        &s3,
        PITR,
        &backup,
        &drgit::timearg::postgres(after),
        &work.path().join("after"),
    );
    assert_eq!(code, 3, "{log}");
    assert!(
        log.contains("recovery ended before configured recovery target was reached"),
        "{log}"
    );
    let before = f.state();
    let refused = run(
        &f,
        &["pg-recover", "--target-time", &after.to_string()],
        &now,
    );
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("is not before the last transaction in the archived WAL"),
        "{}",
        refused.stderr
    );
    assert_eq!(f.state(), before);

    // Exactly the last commit's time: PostgreSQL stops only before a commit
    // later than the target, so it never stops; drgit refuses it too.
    let (code, log) = restore(
        &s3,
        PITR,
        &backup,
        &drgit::timearg::postgres(end),
        &work.path().join("at-end"),
    );
    assert_eq!(code, 3, "{log}");
    assert!(
        log.contains("recovery ended before configured recovery target was reached"),
        "{log}"
    );
    let refused = run(&f, &["pg-recover", "--target-time", &end.to_string()], &now);
    assert_eq!(refused.code, 2, "{}", refused.stderr);

    // And the RFC 3339 form an earlier drgit wrote: PostgreSQL refuses it.
    let (code, log) = restore(
        &s3,
        PITR,
        &backup,
        &between.to_string(),
        &work.path().join("rfc3339"),
    );
    assert_eq!(code, 3, "{log}");
    assert!(
        log.contains("invalid value for parameter \"recovery_target_time\""),
        "{log}"
    );
}
