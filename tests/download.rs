//! Verified downloads: the fixture's real etcd snapshot (from `etcdctl
//! snapshot save`) and Kanidm backups, corrupted copies that must fail with
//! a specific message and leave nothing behind, and downloads from a real S3
//! server through a proxy that fails requests and cuts bodies off.

mod common;

use std::path::{Path, PathBuf};

use common::fault_proxy::{Fault, FaultProxy};
use common::s3_server::{KEY_ID, S3Server, SECRET};
use common::{Fixture, project};
use drgit::backup::download::{self, DownloadError, Kind, Options};
use drgit::backup::local::LocalStore;
use drgit::backup::s3::{S3Settings, S3Store};
use drgit::backup::verify::Corrupt;

const SNAPSHOT: &str = "etcd/20261126T030246Z.db";

fn store_with(dir: &Path, key: &str, bytes: &[u8]) -> LocalStore {
    let p = dir.join(key);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, bytes).unwrap();
    LocalStore::new(dir.to_path_buf())
}

fn leftovers(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[test]
fn real_etcd_snapshot_verifies_and_corrupt_copies_do_not() {
    let snapshot = std::fs::read(project().join("fixtures/backup-store").join(SNAPSHOT)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();

    let ok = store_with(&tmp.path().join("good"), SNAPSHOT, &snapshot);
    let got = download::download(
        &ok,
        SNAPSHOT,
        &out.join("s.db"),
        Kind::Etcd,
        &Options::default(),
    )
    .unwrap();
    assert_eq!(
        got.checks,
        vec!["length 24608", "SHA-256 trailer", "bbolt meta pages"]
    );
    assert_eq!(std::fs::read(out.join("s.db")).unwrap(), snapshot);
    std::fs::remove_file(out.join("s.db")).unwrap();

    let mut truncated = snapshot.clone();
    truncated.truncate(snapshot.len() - 100);
    let mut flipped = snapshot.clone();
    flipped[10_000] ^= 0x40;
    let mut trailer = snapshot.clone();
    let last = trailer.len() - 1;
    trailer[last] ^= 1;
    // Meta pages torn, the trailer recomputed: one valid page is enough
    // (bbolt v1.4.2 db.go), none is not.
    let torn = |pages: &[usize]| {
        let mut b = snapshot.clone();
        for p in pages {
            b[p * 4096 + 16] ^= 0xff; // the page's magic
        }
        let n = b.len() - 32;
        let digest = {
            use sha2::Digest;
            sha2::Sha256::digest(&b[..n])
        };
        b[n..].copy_from_slice(&digest);
        b
    };
    let meta = torn(&[0, 1]);
    for one in [0, 1] {
        let store = store_with(
            &tmp.path().join(format!("torn{one}")),
            SNAPSHOT,
            &torn(&[one]),
        );
        download::download(
            &store,
            SNAPSHOT,
            &out.join(format!("t{one}.db")),
            Kind::Etcd,
            &Options::default(),
        )
        .unwrap_or_else(|e| panic!("meta page {one} torn, the other valid: {e}"));
        std::fs::remove_file(out.join(format!("t{one}.db"))).unwrap();
    }
    for (name, bytes, expect) in [
        (
            "truncated",
            truncated,
            "is not a multiple of 512 plus the 32-byte SHA-256 trailer",
        ),
        ("flipped", flipped, "the SHA-256 trailer does not match"),
        ("trailer", trailer, "the SHA-256 trailer does not match"),
        (
            "meta",
            meta,
            "bbolt meta page 0: magic 0xed0cda12, expected 0xed0cdaed; and meta page 1: magic",
        ),
    ] {
        let store = store_with(&tmp.path().join(name), SNAPSHOT, &bytes);
        let err = download::download(
            &store,
            SNAPSHOT,
            &out.join("s.db"),
            Kind::Etcd,
            &Options::default(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, DownloadError::Corrupt { .. }),
            "{name}: {msg}"
        );
        assert!(msg.contains(expect), "{name}: {msg}");
        assert!(
            leftovers(&out).is_empty(),
            "{name}: nothing is kept: {:?}",
            leftovers(&out)
        );
    }
}

#[test]
fn kanidm_backups_plain_gzip_and_broken() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let real =
        std::fs::read(project().join("fixtures/backup-store/kanidm/20261126T030246Z.backup"))
            .unwrap();
    let plain = br#"{"version":"1.8","db_s_uuid":"x","db_d_uuid":"y","db_ts_max":{"secs":1,"nanos":0},"keyhandles":{},"repl_meta":{},"entries":[]}"#.to_vec();
    let mut not_gzip = real.clone();
    not_gzip.truncate(real.len() / 2);
    /// Ok((version, check)) or Err(text of the error).
    type Expect<'a> = Result<(&'a str, &'a str), &'a str>;
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        ("gzip", real, Ok(("1.9", "gzip JSON backup"))),
        ("plain", plain, Ok(("1.8", "JSON backup"))),
        ("cut gzip", not_gzip, Err("kanidm backup")),
        (
            "no version",
            br#"{"entries":[]}"#.to_vec(),
            Err("missing field `version`"),
        ),
    ];
    for (name, bytes, expect) in cases {
        let store = store_with(
            &tmp.path().join(name.replace(' ', "-")),
            "kanidm/b.backup",
            &bytes,
        );
        let r = download::download(
            &store,
            "kanidm/b.backup",
            &out.join("b"),
            Kind::Kanidm,
            &Options::default(),
        );
        match (r, expect) {
            (Ok(d), Ok((version, check))) => {
                assert_eq!(d.version.as_deref(), Some(version), "{name}");
                assert!(
                    d.checks.contains(&check.to_string()),
                    "{name}: {:?}",
                    d.checks
                );
                std::fs::remove_file(out.join("b")).unwrap();
            }
            (Err(e), Err(text)) => {
                assert!(e.to_string().contains(text), "{name}: {e}");
                assert!(leftovers(&out).is_empty());
            }
            (r, _) => panic!("{name}: unexpected {r:?}"),
        }
    }
    let _ = Corrupt::Io(String::new());
}

fn s3_store(endpoint: &str) -> S3Store {
    // SAFETY: set before the SDK reads the environment, in this test process only.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", KEY_ID);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET);
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    S3Store::new(&S3Settings {
        bucket: "home-cluster-backup".into(),
        prefix: String::new(),
        endpoint: endpoint.into(),
        region: "us-east-1".into(),
        path_style: None,
        credentials: None,
        parallel: 8,
    })
    .unwrap()
}

#[test]
fn s3_parts_retries_cuts_and_resume() {
    let s3 = S3Server::start(&[]);
    s3.create_bucket("home-cluster-backup");
    s3.upload_dir(
        "home-cluster-backup",
        &project().join("fixtures/backup-store/etcd"),
        "etcd/",
    );
    let proxy = FaultProxy::start(&s3.endpoint);
    let store = s3_store(&proxy.endpoint);
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("snap.db");
    let small = Options {
        part_size: 4096,
        parallel: 3,
        progress: false,
    };

    // Seven parts in parallel; a 503 and a cut body along the way are retried.
    proxy.inject("GET /home-cluster-backup/etcd/", Fault::Status(503));
    proxy.inject("GET /home-cluster-backup/etcd/", Fault::CutBody(1000));
    let got = download::download(&store, SNAPSHOT, &dest, Kind::Etcd, &small).unwrap();
    assert!(
        got.checks.contains(&"MD5 = ETag".to_string()),
        "{:?}",
        got.checks
    );
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(project().join("fixtures/backup-store").join(SNAPSHOT)).unwrap()
    );
    assert!(
        proxy.count("GET /home-cluster-backup/etcd/") >= 9,
        "7 parts + 2 retries"
    );
    std::fs::remove_file(&dest).unwrap();

    // A server that keeps cutting one part off: the download fails, keeps
    // what it has under the part name only, and the next run resumes.
    // HEAD first, then three parts get through, then every try is cut.
    for _ in 0..3 {
        proxy.inject("GET /home-cluster-backup/etcd/", Fault::Pass);
    }
    for _ in 0..30 {
        proxy.inject("GET /home-cluster-backup/etcd/", Fault::CutBody(100));
    }
    let slow = Options {
        parallel: 1,
        ..small.clone()
    };
    let err = download::download(&store, SNAPSHOT, &dest, Kind::Etcd, &slow).unwrap_err();
    assert!(err.to_string().contains("cut short"), "{err}");
    assert!(!dest.exists(), "no partial file under the final name");
    assert!(out.path().join("snap.db.drgit-part").exists());
    proxy.faults.lock().unwrap().clear();
    let before = proxy.count("GET /home-cluster-backup/etcd/");
    let got = download::download(&store, SNAPSHOT, &dest, Kind::Etcd, &slow).unwrap();
    let parts_fetched = proxy.count("GET /home-cluster-backup/etcd/") - before;
    assert_eq!(got.resumed_parts, 3, "the three complete parts are kept");
    assert_eq!(parts_fetched, 4, "only the rest is fetched again");
    assert!(dest.exists() && !out.path().join("snap.db.drgit-part").exists());
}

#[test]
fn cli_downloads_latest_from_the_fixture() {
    let f = Fixture::new();
    let out = f.dir.path().join("snap.db");
    let run = f.drgit(&[
        "--json",
        "backups",
        "download",
        "etcd",
        "latest",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["key"], SNAPSHOT);
    assert!(out.exists());
    let run = f.drgit(&["backups", "download", "kanidm", "nope.backup"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("no backup `nope.backup`"),
        "{}",
        run.stderr
    );
}

unsafe extern "C" {
    fn umask(mask: u32) -> u32;
}

#[test]
fn downloads_are_private_whatever_the_umask() {
    // An etcd snapshot holds every Kubernetes Secret, a Kanidm backup every
    // credential: 0600 under the ordinary umask 022 (this test's process
    // alone: nextest runs each test in its own).
    unsafe { umask(0o022) };
    let f = Fixture::new();
    use std::os::unix::fs::PermissionsExt;
    for kind in ["etcd", "kanidm"] {
        let out = f.dir.path().join(format!("{kind}.backup"));
        let run = f.drgit(&[
            "backups",
            "download",
            kind,
            "latest",
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{kind}: {mode:o}");
    }
}
