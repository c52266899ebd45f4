//! `drgit drill` with the real tools: PostgreSQL 15 restoring a real
//! barman-cloud archive (made by tests/support/barman-pitr.sh on the S3
//! test server) through barman-cloud-restore and barman-cloud-wal-restore,
//! and a real etcd restored from the real snapshot fixture. Each drill
//! leaves nothing behind, also when it fails.

mod common;

use std::process::Command;

use common::s3_server::{KEY_ID, S3Server, SECRET};
use common::{Fixture, Run};

const BUCKET: &str = "drill-pitr";

/// The archive: rows `zero` (before the base backup), `a` and `b`.
struct Archive {
    s3: S3Server,
    a: jiff::Timestamp,
    b: jiff::Timestamp,
    _work: tempfile::TempDir,
}

fn archive() -> Archive {
    let s3 = S3Server::start(&[]);
    s3.create_bucket(BUCKET);
    let work = tempfile::tempdir().unwrap();
    let rows = common::pitr_archive(&s3.endpoint, BUCKET, &work.path().join("src"));
    Archive {
        s3,
        a: rows["a"],
        b: rows["b"],
        _work: work,
    }
}

/// A repository pointed at the archive; drills work in `scratch`.
fn repo(ar: &Archive, scratch: &std::path::Path) -> Fixture {
    let f = Fixture::new();
    f.point_manifest_at(&format!("s3://{BUCKET}/cnpg/"));
    std::fs::create_dir_all(scratch).unwrap();
    std::fs::write(
        f.repo().join("drgit.toml"),
        format!(
            "[backup]\nurl = \"s3://{BUCKET}/\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\n[drill]\nrun_as = \"postgres\"\ntimeout_secs = 60\nwork_dir = \"{}\"\npg_checks = [\"select string_agg(note, ',' order by at) from t\"]\n",
            ar.s3.endpoint,
            scratch.display()
        ),
    )
    .unwrap();
    f
}

/// Where the drills work; postgres (`run_as`) must reach it.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    Command::new("chmod")
        .args(["755", dir.path().to_str().unwrap()])
        .status()
        .unwrap();
    dir
}

fn drill(f: &Fixture, args: &[&str]) -> Run {
    let now = jiff::Timestamp::now().to_string();
    f.drgit_env(
        args,
        &[
            ("AWS_ACCESS_KEY_ID", KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("DRGIT_NOW", now.as_str()),
        ],
    )
}

fn left_in(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn pg_drill_restores_exactly_to_the_target_and_cleans_up() {
    let ar = archive();
    let scratch = scratch();
    let f = repo(&ar, scratch.path());

    // Between the two commits: `a` restored, `b` not.
    let between = ar.a + jiff::SignedDuration::from_millis(750);
    let run = drill(
        &f,
        &[
            "--json",
            "drill",
            "pg",
            "--local",
            "--target-time",
            &between.to_string(),
        ],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = &run.json()["drills"][0];
    assert_eq!(r["reached"], true, "{r:#}");
    assert_eq!(r["kind"], "pg");
    assert_eq!(
        r["target"].as_str().unwrap(),
        drgit::timearg::postgres(between),
        "the target as pg-recover writes it"
    );
    assert_eq!(r["checks"][1]["result"], "zero,a", "{r:#}");
    assert!(
        r["checks"][0]["result"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 100
    );
    assert!(r["bytes_restored"].as_u64().unwrap() > 10_000_000);
    assert!(r["restore_secs"].as_f64().unwrap() > 0.0);
    assert!(r["replay_secs"].as_f64().unwrap() > 0.0);
    assert!(
        left_in(scratch.path()).is_empty(),
        "{:?}",
        left_in(scratch.path())
    );

    // No target: the end of the archived WAL, both rows.
    let run = drill(&f, &["--json", "drill", "pg"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["drills"][0]["checks"][1]["result"], "zero,a,b");

    // After the last commit: refused before anything starts.
    let after = ar.b + jiff::SignedDuration::from_secs(2);
    let run = drill(&f, &["drill", "pg", "--target-time", &after.to_string()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("is not before the last transaction"),
        "{}",
        run.stderr
    );
    assert!(left_in(scratch.path()).is_empty());
}

#[test]
fn the_s3_keys_reach_barman_cloud_by_environment_never_on_a_command_line() {
    // Any user can read another's command line (`ps`, /proc/PID/cmdline):
    // every process the drill starts is looked at while it runs.
    let ar = archive();
    let scratch = scratch();
    let f = repo(&ar, scratch.path());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = std::thread::scope(|sc| {
        let watcher = sc.spawn(|| {
            let mut seen = std::collections::BTreeSet::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                for e in std::fs::read_dir("/proc").unwrap().flatten() {
                    let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
                        continue;
                    };
                    let line = String::from_utf8_lossy(&raw).replace('\0', " ");
                    if line.contains("barman-cloud")
                        || line.contains("drgit")
                        || line.contains("postgres -D")
                    {
                        seen.insert(line);
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            seen
        });
        let run = drill(&f, &["drill", "pg", "--local"]);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(run.code, 0, "{}", run.stderr);
        watcher.join().unwrap()
    });
    assert!(
        seen.iter().any(|l| l.contains("barman-cloud-restore")),
        "the restore was seen running: {seen:#?}"
    );
    for line in &seen {
        assert!(
            !line.contains(SECRET) && !line.contains(KEY_ID),
            "a key on a command line: {line}"
        );
    }
}

#[test]
fn a_corrupted_base_backup_fails_with_barmans_error_and_leaves_nothing() {
    let ar = archive();
    let scratch = scratch();
    let f = repo(&ar, scratch.path());
    // The base backup's data replaced by junk, as a damaged upload would be.
    let keys = ar.s3.keys(BUCKET, "cnpg/shared-pg/base/");
    let data = keys
        .iter()
        .find(|k| k.contains("/data.tar"))
        .unwrap_or_else(|| panic!("{keys:?}"));
    ar.s3.put(BUCKET, data, b"this is not a tar archive");
    let run = drill(&f, &["drill", "pg"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("FAILED"), "{}", run.stdout);
    assert!(
        run.stdout.contains("barman-cloud-restore failed"),
        "{}",
        run.stdout
    );
    assert!(
        left_in(scratch.path()).is_empty(),
        "{:?}",
        left_in(scratch.path())
    );
}

#[test]
fn etcd_drill_counts_the_fixtures_keys_and_refuses_a_corrupted_copy() {
    let f = Fixture::new();
    let scratch = tempfile::tempdir().unwrap();
    f.config(&format!(
        "[drill]\nwork_dir = \"{}\"\n",
        scratch.path().display()
    ));
    let run = f.drgit(&["--json", "drill", "etcd"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = &run.json()["drills"][0];
    // scripts/make-backup-fixture wrote /registry/fixture/key-1…20.
    assert_eq!(r["keys"]["fixture"], 20, "{r:#}");
    assert_eq!(r["reached"], true);
    assert!(left_in(scratch.path()).is_empty());

    // A copy with one byte changed fails its SHA-256 trailer: refused.
    let copy = f.dir.path().join("corrupt.db");
    let mut bytes = std::fs::read(f.store().join("etcd/20261126T030246Z.db")).unwrap();
    bytes[5000] ^= 0xff;
    std::fs::write(&copy, bytes).unwrap();
    let run = f.drgit(&["drill", "etcd", "--snapshot", copy.to_str().unwrap()]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("corrupt.db"), "{}", run.stderr);
    assert!(left_in(scratch.path()).is_empty());

    // As metrics, for the in-cluster CronJob.
    let run = f.drgit(&["drill", "etcd", "--format", "openmetrics"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("drgit_drill_success{kind=\"etcd\",mode=\"local\"} 1\n")
    );
    assert!(run.stdout.ends_with("# EOF\n"));
}

#[test]
fn without_etcdutl_an_etcdctl_3_6_is_not_asked_to_restore() {
    // etcd 3.6 removed `etcdctl snapshot restore` (CHANGELOG-3.6); a
    // STAND-IN etcdctl prints 3.6's `version` and fails anything else as
    // 3.6 does, beside the real etcd server.
    let f = Fixture::new();
    let bin = tempfile::tempdir().unwrap();
    let etcdctl = bin.path().join("etcdctl");
    std::fs::write(
        &etcdctl,
        "#!/bin/sh\nif [ \"$1\" = version ]; then echo 'etcdctl version: 3.6.4'; echo 'API version: 3.6'; exit 0; fi\necho \"Error: unknown command \\\"$2\\\" for \\\"etcdctl $1\\\"\" >&2; exit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&etcdctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let etcd = which("etcd");
    std::os::unix::fs::symlink(etcd, bin.path().join("etcd")).unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.path().display());
    let run = f.drgit_env(&["drill", "etcd"], &[("PATH", path.as_str())]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stderr.contains("etcdutl is not on PATH, and etcdctl 3.6 has no `snapshot restore` (etcd 3.6 moved it to etcdutl): install etcdutl"),
        "{}",
        run.stderr
    );
}

fn which(program: &str) -> std::path::PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
}

// --- in the cluster, against the fake Kubernetes API server -----------------

use common::fake_cluster::{Behaviour, FakeCluster};

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

const DRILL_PREFIX: &str =
    "/apis/postgresql.cnpg.io/v1/namespaces/database/clusters/shared-pg-drill-";

struct InCluster {
    f: Fixture,
    kube: FakeCluster,
    kubeconfig: std::path::PathBuf,
}

fn in_cluster(behaviour: Behaviour) -> InCluster {
    let f = Fixture::new();
    let kube = FakeCluster::start(std::path::PathBuf::from("/nonexistent"), behaviour);
    let kubeconfig = kube.kubeconfig(f.dir.path());
    f.config("[postgres]\nhealth_poll_ms = 20\nrecovery_timeout_secs = 30\n");
    InCluster {
        f,
        kube,
        kubeconfig,
    }
}

impl InCluster {
    /// `drill pg --in-cluster` to the fixture's target, as JSON.
    fn drill_pg(&self) -> common::Run {
        self.f.drgit(&self.args(&[
            "--json",
            "drill",
            "pg",
            "--in-cluster",
            "--target-time",
            common::TARGET,
        ]))
    }

    fn args<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["--kubeconfig", self.kubeconfig.to_str().unwrap()];
        v.extend_from_slice(rest);
        v
    }

    /// The drill Clusters the API server holds now.
    fn live(&self) -> Vec<String> {
        let st = self.kube.state.lock().unwrap();
        st.objects
            .keys()
            .filter(|k| k.starts_with(DRILL_PREFIX))
            .cloned()
            .collect()
    }

    /// Every drill Cluster created, as sent.
    fn created(&self) -> Vec<serde_json::Value> {
        let st = self.kube.state.lock().unwrap();
        st.created
            .iter()
            .filter(|o| o["kind"] == "Cluster")
            .cloned()
            .collect()
    }

    fn journal(&self) -> std::path::PathBuf {
        self.f.repo().join(".git/drgit/journal.json")
    }

    /// Starts `drgit <drill…>` in the background.
    fn spawn(&self, drill: &[&str]) -> std::process::Child {
        let repo = self.f.repo();
        let mut args = vec!["--repo", repo.to_str().unwrap()];
        args.extend_from_slice(drill);
        std::process::Command::new(env!("CARGO_BIN_EXE_drgit"))
            .args(self.args(&args))
            .env("DRGIT_NOW", common::NOW)
            .env("HOME", std::env::temp_dir().join("drgit-test-home"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Waits (10 s at most) until `ready` holds.
    fn until(&self, what: &str, ready: impl Fn() -> bool) {
        for _ in 0..400 {
            if ready() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("never reached: {what}");
    }

    /// Ctrl-C (SIGINT): the drill exits with 130, as interrupted.
    fn interrupt(&self, child: std::process::Child) {
        std::thread::sleep(std::time::Duration::from_millis(100));
        unsafe { libc_kill(child.id() as i32, 2) };
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(130),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Killed outright (SIGKILL): no cleanup of its own.
    fn kill(&self, mut child: std::process::Child) {
        child.kill().unwrap();
        let _ = child.wait();
    }

    /// `drgit resume` deletes what the journal names.
    fn resume_cleans_up(&self) {
        let run = self.f.drgit(&self.args(&["--json", "resume"]));
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
        assert!(run.stdout.contains("cleaned_up"), "{}", run.stdout);
    }
}

#[test]
fn in_cluster_drill_recovers_into_a_throwaway_cluster_that_archives_nowhere() {
    let w = in_cluster(Behaviour::default());
    let run = w.drill_pg();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = &run.json()["drills"][0];
    assert_eq!(r["mode"], "in-cluster");
    assert_eq!(r["reached"], true, "{r:#}");
    assert_eq!(r["checks"][0]["result"], "415");
    let created = w.created();
    assert_eq!(created.len(), 1);
    let spec = &created[0]["spec"];
    // It must never write to any lineage: no backup section, no plugin.
    assert!(spec.get("backup").is_none(), "{spec:#}");
    assert!(spec.get("plugins").is_none(), "{spec:#}");
    assert_eq!(spec["instances"], 1);
    assert_eq!(
        spec["bootstrap"]["recovery"]["source"],
        "drgit-drill-source"
    );
    assert_eq!(
        spec["bootstrap"]["recovery"]["recoveryTarget"]["targetTime"],
        r["target"]
    );
    let source = &spec["externalClusters"][0];
    assert_eq!(source["name"], "drgit-drill-source");
    assert_eq!(source["barmanObjectStore"]["serverName"], "shared-pg");
    assert_eq!(
        source["barmanObjectStore"]["destinationPath"],
        "s3://home-cluster-backup/cnpg/"
    );
    // Deleted afterwards, nothing journaled any more.
    assert!(w.live().is_empty(), "{:?}", w.live());
    assert!(!w.journal().exists());
    let report = run.json();
    let mut shown = report["drills"][0].clone();
    for k in ["restore_secs", "replay_secs", "total_secs"] {
        shown[k] = serde_json::json!("[secs]");
    }
    insta::assert_snapshot!(serde_json::to_string_pretty(&shown).unwrap());
}

#[test]
fn an_in_cluster_drill_starts_on_a_cluster_with_synchronous_replicas() {
    // D2: a copy of this spec with one instance would be refused by CNPG's
    // webhook; the throwaway Cluster drops what one instance cannot have.
    let w = in_cluster(Behaviour::default());
    let text = w.f.read_manifest().replacen(
        "  instances: 2\n",
        "  instances: 3\n  minSyncReplicas: 1\n  maxSyncReplicas: 2\n  postgresql:\n    synchronous:\n      method: any\n      number: 1\n  managed:\n    services:\n      additional:\n        - selectorType: rw\n          serviceTemplate:\n            metadata:\n              name: shared-pg-lb\n            spec:\n              type: LoadBalancer\n",
        1,
    );
    w.f.set_manifest(&text);
    let run = w.drill_pg();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let spec = &w.created()[0]["spec"];
    for key in ["minSyncReplicas", "maxSyncReplicas", "replica"] {
        assert!(spec.get(key).is_none(), "{key}: {spec:#}");
    }
    assert!(spec["postgresql"].get("synchronous").is_none(), "{spec:#}");
    assert!(spec["managed"].get("services").is_none(), "{spec:#}");
    assert!(w.live().is_empty(), "{:?}", w.live());
}

#[test]
fn a_failed_in_cluster_drill_still_deletes_its_cluster() {
    let w = in_cluster(Behaviour {
        drill_fails: Some("recovery ended before configured recovery target was reached"),
        ..Behaviour::default()
    });
    let run = w.f.drgit(&w.args(&["drill", "pg", "--in-cluster"]));
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("recovery ended before configured recovery target was reached"),
        "{}",
        run.stdout
    );
    assert_eq!(w.created().len(), 1);
    assert!(w.live().is_empty(), "{:?}", w.live());
    assert!(!w.journal().exists());
}

#[test]
fn an_interrupted_drill_deletes_its_cluster_and_resume_cleans_up_after_a_kill() {
    // Never healthy: the drill waits until it is stopped.
    let w = in_cluster(Behaviour {
        drill_fails: Some("waiting for the full-recovery Job"),
        ..Behaviour::default()
    });
    let drill = ["drill", "pg", "--in-cluster"];
    let w = &w;
    let created = |n: usize| move || w.created().len() >= n && !w.live().is_empty();

    // Ctrl-C: the drill deletes its Cluster and says it was interrupted.
    let child = w.spawn(&drill);
    w.until("a drill Cluster", created(1));
    w.interrupt(child);
    assert!(w.live().is_empty(), "{:?}", w.live());
    assert!(!w.journal().exists());

    // Killed outright: the journal names the Cluster; resume deletes it.
    let child = w.spawn(&drill);
    w.until("a second drill Cluster", created(2));
    w.kill(child);
    assert_eq!(w.live().len(), 1);
    assert!(w.journal().exists());
    w.resume_cleans_up();
    assert!(w.live().is_empty(), "{:?}", w.live());
    assert!(!w.journal().exists());
}

const KANIDM_DRILL_POD: &str = "/api/v1/namespaces/kanidm/pods/drgit-kanidm-drill-";

impl InCluster {
    fn drill_pods(&self) -> Vec<String> {
        let st = self.kube.state.lock().unwrap();
        st.objects
            .keys()
            .filter(|k| k.starts_with(KANIDM_DRILL_POD))
            .cloned()
            .collect()
    }
}

#[test]
fn kanidm_drill_restores_into_a_throwaway_pod_and_deletes_it() {
    let w = in_cluster(Behaviour::default());
    let run = w.f.drgit(&w.args(&["--json", "drill", "kanidm"]));
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = &run.json()["drills"][0];
    assert_eq!(r["kind"], "kanidm");
    assert_eq!(r["reached"], true, "{r:#}");
    assert_eq!(r["checks"][0]["result"], "Restore Success");
    assert!(
        r["checks"][1]["result"]
            .as_str()
            .unwrap()
            .contains("Domain Name"),
        "{r:#}"
    );
    assert!(r["keys"]["entries"].as_u64().unwrap() > 0, "{r:#}");
    // The pod held the data in an emptyDir only, and is gone.
    let st = w.kube.state.lock().unwrap();
    let pod = st
        .created
        .iter()
        .find(|o| o["kind"] == "Pod")
        .expect("a drill pod");
    let volumes = pod["spec"]["volumes"].to_string();
    assert!(
        volumes.contains("emptyDir") && !volumes.contains("persistentVolumeClaim"),
        "{volumes}"
    );
    drop(st);
    assert!(w.drill_pods().is_empty(), "{:?}", w.drill_pods());
    assert!(!w.journal().exists());
}

#[test]
fn a_kanidm_backup_that_does_not_restore_fails_the_drill_and_the_pod_goes() {
    let w = in_cluster(Behaviour {
        restore_fails: Some("MismatchedRestoreVersion"),
        ..Behaviour::default()
    });
    let run = w.f.drgit(&w.args(&["drill", "kanidm"]));
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("FAIL") && run.stdout.contains("MismatchedRestoreVersion"),
        "{}",
        run.stdout
    );
    assert!(w.drill_pods().is_empty(), "{:?}", w.drill_pods());
    assert!(!w.journal().exists());
}

#[test]
fn an_interrupted_kanidm_drill_deletes_its_pod_and_resume_cleans_up_after_a_kill() {
    // The restore never ends: the drill waits until it is stopped.
    let w = in_cluster(Behaviour {
        restore_pending: true,
        ..Behaviour::default()
    });
    let drill = ["drill", "kanidm"];
    let copied = || !w.drill_pods().is_empty() && !w.kube.state.lock().unwrap().volume.is_empty();

    // Ctrl-C while the restore runs: the pod goes, the exit says why.
    let child = w.spawn(&drill);
    w.until("the drill pod's copy", copied);
    w.interrupt(child);
    assert!(w.drill_pods().is_empty(), "{:?}", w.drill_pods());
    assert!(!w.journal().exists());

    // Killed outright: resume deletes the pod.
    w.kube.state.lock().unwrap().volume.clear();
    let child = w.spawn(&drill);
    w.until("the drill pod's copy", copied);
    w.kill(child);
    assert_eq!(w.drill_pods().len(), 1);
    w.resume_cleans_up();
    assert!(w.drill_pods().is_empty(), "{:?}", w.drill_pods());
    assert!(!w.journal().exists());
}
