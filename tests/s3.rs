//! The backup store on a real S3 server (moto on loopback): the fixture's
//! real barman catalog uploaded into a bucket, read by `pg-recover`, with
//! pagination past 1,000 keys and the errors an operator meets (wrong
//! bucket, wrong endpoint, refused credentials) — none of which may show a
//! secret.

mod common;

use common::s3_server::{KEY_ID, S3Server, SECRET};
use common::{Fixture, TARGET, project};

const BUCKET: &str = "home-cluster-backup";

fn s3_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/nonexistent"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
    ]
}

fn s3_config(f: &Fixture, url: &str, endpoint: &str) {
    std::fs::write(
        f.repo().join("drgit.toml"),
        format!("[backup]\nurl = \"{url}\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\n"),
    )
    .unwrap();
}

fn server_with_fixture(prefix: &str) -> S3Server {
    let s3 = S3Server::start(&[]);
    s3.create_bucket(BUCKET);
    s3.upload_dir(BUCKET, &project().join("fixtures/backup-store"), prefix);
    s3
}

#[test]
fn pg_recover_reads_the_catalog_from_s3() {
    let s3 = server_with_fixture("cluster-a/");
    let f = Fixture::new();
    f.point_manifest_at(&format!("s3://{BUCKET}/cluster-a/cnpg/"));
    s3_config(&f, &format!("s3://{BUCKET}/cluster-a/"), &s3.endpoint);
    let run = f.drgit_env(
        &["--json", "pg-recover", "--target-time", TARGET, "--dry-run"],
        &s3_env(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = run.json();
    assert_eq!(
        out["catalog"]["location"],
        "s3://home-cluster-backup/cluster-a/cnpg/shared-pg/"
    );
    assert_eq!(out["catalog"]["base_backups"], 2);
    assert_eq!(out["catalog"]["wal_segments"], 10);
    assert_eq!(
        out["catalog"]["windows"][0]["start"],
        "2026-11-26T03:02:26.121822Z"
    );
    assert_eq!(out["base_backup"], "20261126T030232");
    assert!(!run.stdout.contains(SECRET) && !run.stderr.contains(SECRET));
}

#[test]
fn listing_pages_past_a_thousand_keys_and_finds_the_gap() {
    let s3 = server_with_fixture("");
    // 1,200 more segments after the fixture's last (…0A), one missing.
    let keys: Vec<String> = (0x0B..0x0B + 1200u64)
        .filter(|n| *n != 0x0B + 700)
        .map(|n| {
            format!(
                "cnpg/shared-pg/wals/{:08X}{:08X}/{:08X}{:08X}{:08X}.gz",
                1,
                n / 256,
                1,
                n / 256,
                n % 256
            )
        })
        .collect();
    s3.put_many(BUCKET, &keys);
    // The backups' chain now ends before the gap, at 0x0B + 699: drgit
    // reads that segment for its last commit.
    let end = 0x0B + 699u64;
    let name = format!("{:08X}{:08X}{:08X}", 1, end / 256, end % 256);
    let dir = tempfile::tempdir().unwrap();
    let key = format!("cnpg/shared-pg/wals/{}/{name}.gz", &name[..16]);
    std::fs::create_dir_all(dir.path().join(&key).parent().unwrap()).unwrap();
    let commit: jiff::Timestamp = "2026-11-26T03:50:00Z".parse().unwrap();
    std::fs::write(
        dir.path().join(&key),
        common::walgen::segment_gz(&name, &[commit]),
    )
    .unwrap();
    s3.upload_dir(BUCKET, dir.path(), "");
    let f = Fixture::new();
    s3_config(&f, &format!("s3://{BUCKET}/"), &s3.endpoint);
    let run = f.drgit_env(
        &["--json", "pg-recover", "--target-time", TARGET, "--dry-run"],
        &s3_env(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = run.json();
    assert_eq!(out["catalog"]["wal_segments"], 10 + 1199);
    let gaps = out["catalog"]["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let missing = 0x0B + 700u64;
    assert_eq!(
        gaps[0]["first_missing"],
        format!("{:08X}{:08X}{:08X}", 1, missing / 256, missing % 256)
    );
    assert_eq!(gaps[0]["missing"], 1);
    assert_eq!(gaps[0]["reach"], "2026-11-26T03:50:00Z");
    assert_eq!(out["catalog"]["windows"][0]["end"], "2026-11-26T03:50:00Z");
}

#[test]
fn wrong_bucket_endpoint_and_credentials_are_named() {
    let s3 = server_with_fixture("");
    let f = Fixture::new();

    s3_config(&f, "s3://no-such-bucket/", &s3.endpoint);
    // The manifest restores from another bucket: refused before any request.
    let run = f.drgit_env(&["pg-recover", "--dry-run"], &s3_env());
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("`spec.backup.barmanObjectStore.destinationPath` is s3://home-cluster-backup/cnpg/, but drgit reads the backups from s3://no-such-bucket/cnpg/"),
        "{}",
        run.stderr
    );
    f.point_manifest_at("s3://no-such-bucket/cnpg");
    let run = f.drgit_env(&["pg-recover", "--dry-run"], &s3_env());
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("bucket `no-such-bucket` does not exist at http://127.0.0.1:"),
        "{}",
        run.stderr
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    f.point_manifest_at(&format!("s3://{BUCKET}/cnpg/"));
    s3_config(
        &f,
        &format!("s3://{BUCKET}/"),
        &format!("http://127.0.0.1:{closed}"),
    );
    let run = f.drgit_env(&["pg-recover", "--dry-run"], &s3_env());
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&format!(
            "cannot reach the S3 endpoint http://127.0.0.1:{closed}"
        )),
        "{}",
        run.stderr
    );

    // A server that checks credentials (moto with IAM enforcement on).
    let strict = S3Server::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    s3_config(&f, &format!("s3://{BUCKET}/"), &strict.endpoint);
    let run = f.drgit_env(&["pg-recover", "--dry-run"], &s3_env());
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("access denied (InvalidAccessKeyId)"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(SECRET) && !run.stdout.contains(SECRET));
}

#[test]
fn store_pages_listings_and_lists_folders_concurrently() {
    use drgit::backup::BackupStore;
    use drgit::backup::s3::{S3Settings, S3Store};
    let s3 = S3Server::start(&[]);
    s3.create_bucket(BUCKET);
    let mut keys: Vec<String> = (0..1500).map(|i| format!("big/{i:05}")).collect();
    keys.extend((0..30).map(|i| format!("dirs/d{}/{i}", i % 3)));
    s3.put_many(BUCKET, &keys);
    for (k, v) in s3_env() {
        // SAFETY: set before any thread of this test reads the environment.
        unsafe { std::env::set_var(k, v) };
    }
    let store = S3Store::new(&S3Settings {
        bucket: BUCKET.into(),
        prefix: String::new(),
        endpoint: s3.endpoint.clone(),
        region: "us-east-1".into(),
        path_style: None,
        credentials: None,
        parallel: 8,
    })
    .unwrap();
    let big = store.list("big/").unwrap();
    assert_eq!(big.len(), 1500);
    assert_eq!(store.list_calls(), 2, "1,000 keys a page");
    assert!(big.windows(2).all(|w| w[0].key < w[1].key));
    let (dirs, files) = store.list_level("dirs/").unwrap();
    assert_eq!(dirs, vec!["dirs/d0/", "dirs/d1/", "dirs/d2/"]);
    assert!(files.is_empty());
    let all = drgit::backup::list_many(&store, &dirs).unwrap();
    assert_eq!(all.len(), 30);
    assert_eq!(store.get("big/00007").unwrap(), b"x");
    assert!(matches!(
        store.get("big/nope"),
        Err(drgit::backup::StoreError::Missing { .. })
    ));
}

#[test]
fn failing_and_slow_listings_are_retried() {
    use common::fault_proxy::{Fault, FaultProxy};
    let s3 = server_with_fixture("");
    let proxy = FaultProxy::start(&s3.endpoint);
    let f = Fixture::new();
    s3_config(&f, &format!("s3://{BUCKET}/"), &proxy.endpoint);
    proxy.inject("list-type=2", Fault::Status(503));
    proxy.inject("list-type=2", Fault::Status(500));
    proxy.inject(
        "list-type=2",
        Fault::Slow(std::time::Duration::from_millis(1500)),
    );
    proxy.inject("backup.info", Fault::Status(503));
    let run = f.drgit_env(
        &["--json", "pg-recover", "--target-time", TARGET, "--dry-run"],
        &s3_env(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["catalog"]["base_backups"], 2);
    assert_eq!(run.json()["catalog"]["wal_segments"], 10);
    assert!(
        proxy.faults.lock().unwrap().is_empty(),
        "every fault was met and retried past"
    );
}

#[test]
fn the_backup_info_files_are_read_together() {
    // Counted, not timed: each read held back long enough that reads made
    // one after another could never overlap.
    use common::fault_proxy::{Fault, FaultProxy};
    let s3 = server_with_fixture("");
    let proxy = FaultProxy::start(&s3.endpoint);
    let f = Fixture::new();
    s3_config(&f, &format!("s3://{BUCKET}/"), &proxy.endpoint);
    proxy.watch("backup.info");
    for _ in 0..2 {
        proxy.inject(
            "backup.info",
            Fault::Slow(std::time::Duration::from_millis(400)),
        );
    }
    let run = f.drgit_env(
        &["--json", "pg-recover", "--target-time", TARGET, "--dry-run"],
        &s3_env(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["catalog"]["base_backups"], 2);
    assert_eq!(
        proxy.most_in_flight("backup.info"),
        2,
        "both base backups' backup.info in flight at once"
    );
}

#[test]
fn backup_info_reads_and_wal_folder_listings_share_one_bounded_pool() {
    // Counted, not timed. Three base backups and three WAL folders, each
    // request held back: with the pool bounded at 4, four are in flight
    // at once only when `backup.info` reads and folder listings run
    // together (each kind alone is three), and never more than four.
    use common::fault_proxy::{Fault, FaultProxy};
    let s3 = S3Server::start(&[]);
    s3.create_bucket(BUCKET);
    let tree = tempfile::tempdir().unwrap();
    for k in 1..=3 {
        let base = tree
            .path()
            .join(format!("cnpg/shared-pg/base/2026112{k}T000000"));
        std::fs::create_dir_all(&base).unwrap();
        let wal = format!("000000010000000{k}00000001");
        std::fs::write(
            base.join("backup.info"),
            format!(
                "status=DONE\ntimeline=1\nbegin_wal={wal}\nend_wal={wal}\nbegin_time=2026-11-2{k} 00:00:00.000000+00:00\nend_time=2026-11-2{k} 00:05:00.000000+00:00\n"
            ),
        )
        .unwrap();
        let folder = tree
            .path()
            .join(format!("cnpg/shared-pg/wals/000000010000000{k}"));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(format!("000000010000000{k}00000001")), b"x").unwrap();
    }
    s3.upload_dir(BUCKET, tree.path(), "");
    let proxy = FaultProxy::start(&s3.endpoint);
    let f = Fixture::new();
    std::fs::write(
        f.repo().join("drgit.toml"),
        format!(
            "[backup]\nurl = \"s3://{BUCKET}/\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\nparallel_requests = 4\n",
            proxy.endpoint
        ),
    )
    .unwrap();
    const INFOS: &str = "backup.info";
    const FOLDERS: &str = "wals%2F000000010000000";
    for m in [INFOS, FOLDERS] {
        for _ in 0..3 {
            proxy.inject(m, Fault::Slow(std::time::Duration::from_millis(500)));
        }
    }
    let together = format!("{INFOS}|{FOLDERS}");
    proxy.watch(&together);
    proxy.watch(" /");
    let run = f.drgit_env(&["--json", "backups", "status"], &s3_env());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.json()["postgres"][0]["base_backups"],
        3,
        "{}",
        run.stdout
    );
    assert!(
        proxy.faults.lock().unwrap().is_empty(),
        "every held-back request was made: {:?}",
        proxy.requests.lock().unwrap()
    );
    assert_eq!(
        proxy.most_in_flight(&together),
        4,
        "backup.info reads and WAL folder listings in flight together, up to the bound"
    );
    assert_eq!(proxy.most_in_flight(" /"), 4, "never more than the bound");
    // Each chain's last segment read once: the newest one read ahead as
    // soon as its folder was listed, and not again for the chain's end.
    for k in 1..=3 {
        let segment = format!("wals/000000010000000{k}/000000010000000{k}00000001");
        assert_eq!(
            proxy.count(&format!("GET /{BUCKET}/cnpg/shared-pg/{segment}")),
            1,
            "{segment}"
        );
    }
}

#[test]
fn a_listed_backup_downloads_without_a_head_request_first() {
    // The listing gives each object's size and ETag; asking again (HEAD)
    // would cost a round trip before the first byte.
    use common::fault_proxy::FaultProxy;
    let s3 = server_with_fixture("");
    let proxy = FaultProxy::start(&s3.endpoint);
    let f = Fixture::new();
    s3_config(&f, &format!("s3://{BUCKET}/"), &proxy.endpoint);
    for kind in ["etcd", "kanidm"] {
        let dest = f.dir.path().join(format!("{kind}.out"));
        let run = f.drgit_env(
            &[
                "--json",
                "backups",
                "download",
                kind,
                "latest",
                "--output",
                dest.to_str().unwrap(),
            ],
            &s3_env(),
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(
            run.json()["checks"].as_array().unwrap().len() >= 2,
            "{}",
            run.stdout
        );
    }
    assert_eq!(
        proxy.count("HEAD "),
        0,
        "{:?}",
        proxy.requests.lock().unwrap()
    );
    assert!(proxy.count("GET ") > 0);
}

#[test]
fn credentials_come_from_the_cluster_secret_and_stay_secret() {
    use common::fake_cluster::{Behaviour, FakeCluster};
    use common::fault_proxy::FaultProxy;
    const SECRET_ID: &str = "AKIAFROMTHECLUSTER01";
    const SECRET_KEY: &str = "cluster-secret/never+printed";
    let s3 = server_with_fixture("");
    let proxy = FaultProxy::start(&s3.endpoint);
    let kube = FakeCluster::start(
        std::path::PathBuf::from("/nonexistent"),
        Behaviour {
            secret: Some((SECRET_ID, SECRET_KEY)),
            ..Behaviour::default()
        },
    );
    let f = Fixture::new();
    s3_config(&f, &format!("s3://{BUCKET}/"), &proxy.endpoint);
    let kc = kube.kubeconfig(f.dir.path());
    let run = f.drgit_env(
        &[
            "-v",
            "--kubeconfig",
            kc.to_str().unwrap(),
            "--json",
            "pg-recover",
            "--target-time",
            TARGET,
            "--dry-run",
        ],
        &[("AWS_EC2_METADATA_DISABLED", "true")],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("S3 credentials from the cluster Secret"),
        "{}",
        run.stderr
    );
    let heads = proxy.heads();
    assert!(!heads.is_empty());
    assert!(
        heads
            .iter()
            .all(|h| h.contains(&format!("Credential={SECRET_ID}/"))),
        "{heads:?}"
    );
    assert!(!run.stdout.contains(SECRET_KEY) && !run.stderr.contains(SECRET_KEY));
}
