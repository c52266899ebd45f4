//! drgit's WAL decoder against PostgreSQL's own `pg_waldump` on real
//! segments (the fixture's, archived by barman-cloud from PostgreSQL 15):
//! the same number of records start in each segment, and the same commit
//! and abort records, at the same LSNs, with the same timestamps.

mod common;

use std::path::Path;
use std::process::Command;

use drgit::backup::wal;

pub const PG_WALDUMP: &str = "/usr/lib/postgresql/15/bin/pg_waldump";

/// pg_waldump's view of one segment: (records, [(lsn, kind, time)]).
fn waldump(dir: &Path, segment: &str) -> (usize, Vec<(String, String, String)>) {
    let out = Command::new(PG_WALDUMP)
        .args(["-p", dir.to_str().unwrap(), segment, segment])
        .env("TZ", "UTC")
        .output()
        .expect("pg_waldump (postgresql-15) is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut records = 0;
    let mut ends = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("rmgr: ")) {
        records += 1;
        let field = |name: &str| {
            let rest = &line[line.find(name).unwrap() + name.len()..];
            rest.trim_start()
                .split([',', ' '])
                .next()
                .unwrap()
                .to_string()
        };
        let desc = &line[line.find("desc: ").unwrap() + 6..];
        let kind = desc.split(' ').next().unwrap();
        if line.starts_with("rmgr: Transaction")
            && matches!(
                kind,
                "COMMIT" | "ABORT" | "COMMIT_PREPARED" | "ABORT_PREPARED"
            )
        {
            // `COMMIT 2026-11-26 03:02:41.338873 UTC; …`
            let time: String = desc[kind.len() + 1..].chars().take(26).collect();
            ends.push((field("lsn:"), kind.to_string(), time));
        }
    }
    (records, ends)
}

#[test]
fn the_decoder_agrees_with_pg_waldump_on_real_segments() {
    let wals = common::project().join("fixtures/backup-store/cnpg/shared-pg/wals/0000000100000000");
    let tmp = tempfile::tempdir().unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&wals)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 27 && n.ends_with(".gz"))
        .collect();
    names.sort();
    let mut raw = Vec::new();
    for n in &names {
        let bytes = wal::decompress(n, &std::fs::read(wals.join(n)).unwrap()).unwrap();
        std::fs::write(tmp.path().join(&n[..24]), &bytes).unwrap();
        raw.push((n[..24].to_string(), bytes));
    }
    let mut commits = 0;
    for (i, (name, bytes)) in raw.iter().enumerate() {
        let start = wal::segment_start(name, 16 << 20).unwrap();
        let ours = wal::scan(name, start, bytes, None).unwrap();
        let (records, ends) = waldump(tmp.path(), name);
        assert_eq!(ours.records, records, "{name}: records");
        let ours_ends: Vec<(String, String, String)> = ours
            .xact_ends
            .iter()
            .map(|x| {
                (
                    format!("{:X}/{:08X}", x.lsn >> 32, x.lsn & 0xFFFF_FFFF),
                    x.kind.as_str().to_string(),
                    x.time.strftime("%Y-%m-%d %H:%M:%S%.6f").to_string(),
                )
            })
            .collect();
        assert_eq!(ours_ends, ends, "{name}: commit and abort records");
        commits += ends.len();
        // With the next segment at hand, nothing is lost and nothing
        // from the next segment is counted.
        if let Some((_, next)) = raw.get(i + 1) {
            let with_next = wal::scan(name, start, bytes, Some(next)).unwrap();
            assert!(with_next.records >= ours.records, "{name}");
            assert_eq!(
                &with_next.xact_ends[..ours.xact_ends.len()],
                &ours.xact_ends[..],
                "{name}"
            );
        }
    }
    assert!(commits > 0, "the fixture has commits to compare");
}

#[test]
fn a_segment_under_another_name_or_cut_short_is_refused() {
    let wals = common::project().join("fixtures/backup-store/cnpg/shared-pg/wals/0000000100000000");
    let n = "00000001000000000000000A.gz";
    let bytes = wal::decompress(n, &std::fs::read(wals.join(n)).unwrap()).unwrap();
    let wrong = wal::segment_start("000000010000000000000009", 16 << 20).unwrap();
    let e = wal::scan("000000010000000000000009", wrong, &bytes, None).unwrap_err();
    assert!(
        e.to_string()
            .contains("it was written for 0/A000000, not 0/9000000"),
        "{e}"
    );
    let start = wal::segment_start(n, 16 << 20).unwrap();
    let e = wal::scan(n, start, &bytes[..1 << 20], None).unwrap_err();
    assert!(
        e.to_string()
            .contains("its header says segments are 16777216"),
        "{e}"
    );
    // A flipped byte inside the last commit record: its CRC no longer
    // checks out, and the scan ends before it, as PostgreSQL's would.
    let good = wal::scan(n, start, &bytes, None).unwrap();
    let last = good.xact_ends.last().unwrap().lsn;
    let mut bad = bytes.clone();
    bad[(last - start) as usize + 30] ^= 0xFF;
    let scanned = wal::scan(n, start, &bad, None).unwrap();
    assert_eq!(scanned.xact_ends.len(), good.xact_ends.len() - 1);
}

#[test]
fn synthetic_test_segments_read_like_real_ones() {
    // The generator the catalog tests use, checked by PostgreSQL's reader.
    let tmp = tempfile::tempdir().unwrap();
    let name = "000000010000000200000003";
    let times: Vec<jiff::Timestamp> = ["2026-11-26T01:00:00.250001Z", "2026-11-26T01:00:09Z"]
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
    let bytes = common::walgen::segment(name, &times);
    std::fs::write(tmp.path().join(name), &bytes).unwrap();
    let (records, ends) = waldump(tmp.path(), name);
    assert_eq!(records, 2);
    assert_eq!(ends[0].2, "2026-11-26 01:00:00.250001");
    assert_eq!(ends[1].2, "2026-11-26 01:00:09.000000");
    let ours = wal::scan(
        name,
        wal::segment_start(name, 16 << 20).unwrap(),
        &bytes,
        None,
    )
    .unwrap();
    assert_eq!(ours.newest(), Some(times[1]));
}

/// The fixture's newest segment, uncompressed: (name, bytes, start LSN,
/// what the decoder reads in it).
fn fixture_segment() -> (&'static str, Vec<u8>, u64, wal::SegmentScan) {
    let wals = common::project().join("fixtures/backup-store/cnpg/shared-pg/wals/0000000100000000");
    let name = "00000001000000000000000A";
    let raw = wal::decompress(
        &format!("{name}.gz"),
        &std::fs::read(wals.join(format!("{name}.gz"))).unwrap(),
    )
    .unwrap();
    let start = wal::segment_start(name, 16 << 20).unwrap();
    let expected = wal::scan(name, start, &raw, None).unwrap();
    (name, raw, start, expected)
}

#[test]
fn every_compression_barman_cloud_writes_is_read() {
    use drgit::backup::BackupStore;
    use drgit::backup::s3::{S3Settings, S3Store};
    // The fixture's newest segment, archived again by the real
    // barman-cloud-wal-archive with each of its compressions (gzip -z,
    // bzip2 -j, snappy --snappy; python3-snappy for the last).
    let (name, raw, start, expected) = fixture_segment();
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("pg_wal").join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &raw).unwrap();

    let s3 = common::s3_server::S3Server::start(&[]);
    s3.create_bucket("wal-compression");
    for (flag, server, suffix) in [
        ("-z", "gz", "gz"),
        ("-j", "bz", "bz2"),
        ("--snappy", "sn", "snappy"),
    ] {
        let out = Command::new("barman-cloud-wal-archive")
            .args([
                "--endpoint-url",
                &s3.endpoint,
                flag,
                "s3://wal-compression/cnpg/",
                server,
                path.to_str().unwrap(),
            ])
            .env("AWS_ACCESS_KEY_ID", common::s3_server::KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", common::s3_server::SECRET)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // SAFETY: set before this test reads the environment from threads.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", common::s3_server::KEY_ID);
            std::env::set_var("AWS_SECRET_ACCESS_KEY", common::s3_server::SECRET);
        }
        let store = S3Store::new(&S3Settings {
            bucket: "wal-compression".into(),
            prefix: String::new(),
            endpoint: s3.endpoint.clone(),
            region: "us-east-1".into(),
            path_style: None,
            credentials: None,
            parallel: 8,
        })
        .unwrap();
        let key = format!("cnpg/{server}/wals/{}/{name}.{suffix}", &name[..16]);
        let stored = store.get(&key).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_ne!(stored, raw, "{flag}: compressed");
        let bytes = wal::decompress(&key, &stored).unwrap();
        let scanned = wal::scan(name, start, &bytes, None).unwrap();
        assert_eq!(scanned.xact_ends, expected.xact_ends, "{flag}");
        assert_eq!(scanned.records, expected.records, "{flag}");
    }
}

#[test]
fn zstd_lz4_and_xz_as_barman_3_12_writes_them_are_read() {
    // barman-cloud-wal-archive --zstd, --lz4 and --xz arrived in barman
    // 3.12 (Debian 12 ships 3.4, which cannot write them). The segment is
    // compressed here exactly as barman's own compressors do it
    // (barman/compression.py, release/3.17.0: ZSTDCompressor
    // `ZstdCompressor().copy_stream`, LZ4Compressor `lz4.frame.compress`,
    // XZCompressor `lzma.compress`), with the same Python libraries.
    let (name, raw, start, expected) = fixture_segment();
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join(name);
    std::fs::write(&path, &raw).unwrap();
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys, lzma, zstandard, lz4.frame
p = sys.argv[1]
data = open(p, 'rb').read()
with open(p, 'rb') as i, open(p + '.zst', 'wb') as o:
    zstandard.ZstdCompressor().copy_stream(i, o)
open(p + '.lz4', 'wb').write(lz4.frame.compress(data))
open(p + '.xz', 'wb').write(lzma.compress(data))",
            path.to_str().unwrap(),
        ])
        .output()
        .expect("/usr/bin/python3 (python3-zstandard, python3-lz4)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for suffix in ["zst", "lz4", "xz"] {
        let file = format!("{name}.{suffix}");
        let stored = std::fs::read(work.path().join(&file)).unwrap();
        assert!(stored.len() < raw.len() / 4, "{suffix}: compressed");
        let bytes = wal::decompress(&format!("cnpg/x/wals/0000000100000000/{file}"), &stored)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bytes, raw, "{suffix}");
        let scanned = wal::scan(name, start, &bytes, None).unwrap();
        assert_eq!(scanned.xact_ends, expected.xact_ends, "{suffix}");
        // Cut short: an error naming the object, not a wrong answer.
        let cut = wal::decompress(&file, &stored[..stored.len() / 2]);
        assert!(
            cut.as_ref().is_err_and(|e| e.to_string().contains(&file))
                || cut
                    .as_ref()
                    .is_ok_and(|b| wal::scan(name, start, b, None).is_err()),
            "{suffix}: a truncated object read as a whole one"
        );
    }
}

#[test]
fn a_segment_that_starts_inside_a_record() {
    // A busy server's segments start with the rest of a record begun in the
    // previous one: the reader must skip exactly `xlp_rem_len` bytes, across
    // pages too, as PostgreSQL's does.
    let tmp = tempfile::tempdir().unwrap();
    let times: Vec<jiff::Timestamp> = ["2026-11-26T02:00:00.000001Z", "2026-11-26T02:00:05Z"]
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
    for (name, carry) in [
        ("000000010000000000000011", 500),
        ("000000010000000000000012", 10_000),
    ] {
        let bytes = common::walgen::segment_with_carry(name, carry, &times);
        std::fs::write(tmp.path().join(name), &bytes).unwrap();
        let (records, ends) = waldump(tmp.path(), name);
        assert_eq!(records, 2, "{name}: pg_waldump reads both commits");
        assert_eq!(ends[1].2, "2026-11-26 02:00:05.000000");
        let ours = wal::scan(
            name,
            wal::segment_start(name, 16 << 20).unwrap(),
            &bytes,
            None,
        )
        .unwrap();
        assert_eq!(ours.records, 2, "{name}");
        assert_eq!(ours.newest(), Some(times[1]), "{name}");
        assert_eq!(
            ours.xact_ends
                .iter()
                .map(|x| format!("{:X}/{:08X}", x.lsn >> 32, x.lsn & 0xFFFF_FFFF))
                .collect::<Vec<_>>(),
            ends.iter().map(|e| e.0.clone()).collect::<Vec<_>>(),
            "{name}: the same LSNs"
        );
    }
}
