//! `drgit etcd-recover`: the real etcd snapshot of the fixture (and
//! corrupted copies), a real etcdctl's view of it, and a talosctl STAND-IN
//! (tests/support/talosctl-standin.py: per-node state in a file, every argv
//! recorded, the real tool's documented output, rules T1–T5).

mod common;

use common::Fixture;
use serde_json::{Value, json};

const CP: [&str; 3] = ["192.168.0.230", "192.168.0.231", "192.168.0.232"];
const SNAPSHOT: &str = "etcd/20261126T030246Z.db";

struct World {
    f: Fixture,
    state: std::path::PathBuf,
}

/// A lost control plane: every node answers, etcd failed everywhere.
fn world() -> World {
    let f = Fixture::new();
    let state = f.dir.path().join("talos.json");
    let nodes: serde_json::Map<String, Value> = CP
        .iter()
        .map(|n| {
            (
                n.to_string(),
                json!({"reachable": true, "etcd": "failed", "member": false}),
            )
        })
        .collect();
    std::fs::write(
        &state,
        json!({"nodes": nodes, "bootstrapped": null, "join_polls": 0, "snapshot": null})
            .to_string(),
    )
    .unwrap();
    f.config(&format!(
        "[talos]\ntalosctl = \"{}\"\npoll_ms = 10\nreboot_timeout_secs = 2\njoin_timeout_secs = 2\n",
        common::project()
            .join("tests/support/talosctl-standin.py")
            .display()
    ));
    World { f, state }
}

impl World {
    fn run(&self, args: &[&str]) -> common::Run {
        self.f.drgit_env(
            args,
            &[("TALOSCTL_STANDIN_STATE", self.state.to_str().unwrap())],
        )
    }

    fn set(&self, edit: impl FnOnce(&mut Value)) {
        let mut v: Value =
            serde_json::from_str(&std::fs::read_to_string(&self.state).unwrap()).unwrap();
        edit(&mut v);
        std::fs::write(&self.state, v.to_string()).unwrap();
    }

    fn talos_state(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(&self.state).unwrap()).unwrap()
    }

    /// Every talosctl argv, in order.
    fn argvs(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.state.with_extension("json.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The commands that change something, as `verb @nodes`.
    fn changing(&self) -> Vec<String> {
        self.argvs()
            .into_iter()
            .filter_map(|a| {
                let nodes = a.iter().position(|x| x == "-n").map(|i| a[i + 1].clone())?;
                let verb = a
                    .iter()
                    .find(|x| ["reset", "bootstrap", "health"].contains(&x.as_str()))?;
                Some(format!("{verb} @{nodes}"))
            })
            .collect()
    }
}

fn steps(journal: &Value) -> Vec<String> {
    journal["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s["name"].as_str().unwrap(),
                s["status"].as_str().unwrap()
            )
        })
        .collect()
}

const ALL_DONE: [&str; 5] = [
    "reset done",
    "rebooted done",
    "bootstrap done",
    "joined done",
    "health done",
];

#[test]
fn the_dry_run_checks_the_nodes_read_only_and_shows_every_command() {
    let w = world();
    let before = w.f.state();
    let r = w.run(&["etcd-recover", "--dry-run"]).ok();
    assert!(w.changing().is_empty(), "{:?}", w.argvs());
    for a in w.argvs() {
        let read_only = a.ends_with(&["service".into(), "etcd".into()])
            || a.ends_with(&["etcd".into(), "members".into()]);
        assert!(read_only, "a dry run ran {a:?}");
    }
    assert!(r.stdout.contains("revision 21"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("Checked:  192.168.0.231: etcd Failed (health Fail)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("-n 192.168.0.230,192.168.0.231,192.168.0.232 reset --graceful=false --reboot --system-labels-to-wipe=EPHEMERAL"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("-n 192.168.0.230 bootstrap --recover-from="),
        "{}",
        r.stdout
    );
    assert_eq!(w.f.state(), before);
}

#[test]
fn the_recovery_runs_in_order_from_the_verified_snapshot() {
    let w = world();
    let r = w.run(&["--yes", "--json", "etcd-recover"]).ok().json();
    assert_eq!(steps(&r["wait"]), ALL_DONE);
    assert_eq!(
        w.changing(),
        [
            "reset @192.168.0.230,192.168.0.231,192.168.0.232",
            "bootstrap @192.168.0.230",
            "health @192.168.0.230",
        ]
    );
    let argvs = w.argvs();
    let bootstrap = argvs
        .iter()
        .find(|a| a.contains(&"bootstrap".to_string()))
        .unwrap();
    let from = bootstrap
        .iter()
        .find_map(|a| a.strip_prefix("--recover-from="))
        .unwrap();
    assert!(
        from.ends_with(".git/drgit/etcd-recover/20261126T030246Z.db"),
        "{from}"
    );
    assert!(!bootstrap.contains(&"--recover-skip-hash-check".to_string()));
    // The file talosctl uploads is the store's snapshot, byte for byte.
    assert_eq!(
        std::fs::read(from).unwrap(),
        std::fs::read(w.f.store().join(SNAPSHOT)).unwrap()
    );
    let health = argvs
        .iter()
        .find(|a| a.contains(&"health".to_string()))
        .unwrap();
    assert!(health.ends_with(&[
        "--control-plane-nodes".into(),
        CP.join(","),
        "--worker-nodes".into(),
        "192.168.0.200,192.168.0.201,192.168.0.202".into(),
    ]));
    // Nothing changed before the nodes were checked: the first commands read.
    let first_change = argvs
        .iter()
        .position(|a| a.contains(&"reset".to_string()))
        .unwrap();
    assert!(
        argvs[..first_change]
            .iter()
            .any(|a| a.ends_with(&["etcd".into(), "members".into()]))
    );
}

#[test]
fn one_healthy_member_refuses_the_reset() {
    let w = world();
    w.set(|v| {
        v["nodes"]["192.168.0.231"] = json!({"reachable": true, "etcd": "running", "member": true})
    });
    let r = w.run(&["--yes", "etcd-recover"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "refusing to reset the control planes: etcd on 192.168.0.231 is Running with HEALTH OK"
        ),
        "{}",
        r.stderr
    );
    assert!(w.changing().is_empty(), "{:?}", w.argvs());
}

#[test]
fn an_unreachable_node_refuses_the_reset() {
    let w = world();
    w.set(|v| v["nodes"]["192.168.0.232"]["reachable"] = json!(false));
    let r = w.run(&["--yes", "etcd-recover"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("the Talos API of 192.168.0.232 does not answer")
            && r.stderr.contains("code = Unavailable"),
        "{}",
        r.stderr
    );
    assert!(w.changing().is_empty());
}

#[test]
fn a_corrupt_snapshot_is_refused_before_any_talosctl_command() {
    let w = world();
    let good = std::fs::read(w.f.store().join(SNAPSHOT)).unwrap();
    let mut flipped = good.clone();
    flipped[5000] ^= 0x40;
    let cases = [
        ("flipped.db", flipped, "SHA-256"),
        ("truncated.db", good[..good.len() - 100].to_vec(), "size"),
        (
            "no-trailer.db",
            good[..good.len() - 32].to_vec(),
            "--recover-skip-hash-check",
        ),
    ];
    for (name, bytes, says) in cases {
        let path = w.f.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let r = w.run(&[
            "--yes",
            "etcd-recover",
            "--snapshot",
            path.to_str().unwrap(),
        ]);
        assert_eq!(r.code, 2, "{name}: {}", r.stderr);
        assert!(
            r.stderr.contains("is not a usable etcd snapshot") && r.stderr.contains(says),
            "{name}: {}",
            r.stderr
        );
    }
    assert!(w.argvs().is_empty(), "{:?}", w.argvs());
}

#[test]
fn latest_skips_a_newest_copy_that_fails_verification() {
    let w = world();
    let mut bad = std::fs::read(w.f.store().join(SNAPSHOT)).unwrap();
    bad[100] ^= 1;
    std::fs::write(w.f.store().join("etcd/20261127T030000Z.db"), bad).unwrap();
    let r = w.run(&["--json", "etcd-recover", "--dry-run"]).ok().json();
    assert_eq!(r["snapshot"]["source"], SNAPSHOT);
    let skipped = r["snapshot"]["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1);
    assert!(
        skipped[0]
            .as_str()
            .unwrap()
            .contains("etcd/20261127T030000Z.db"),
        "{skipped:?}"
    );
}

#[test]
fn a_data_dir_copy_needs_the_flag_and_gets_it_passed() {
    let w = world();
    let good = std::fs::read(w.f.store().join(SNAPSHOT)).unwrap();
    let copy = w.f.dir.path().join("db");
    std::fs::write(&copy, &good[..good.len() - 32]).unwrap();
    let path = copy.to_str().unwrap();
    let r = w.run(&["--yes", "etcd-recover", "--snapshot", path]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = w
        .run(&[
            "--yes",
            "--json",
            "etcd-recover",
            "--snapshot",
            path,
            "--recover-skip-hash-check",
        ])
        .ok()
        .json();
    assert_eq!(steps(&r["wait"]), ALL_DONE);
    assert_eq!(w.talos_state()["skip_hash_check"], true);
    // Never for a snapshot from the store.
    let r = w.run(&["--yes", "etcd-recover", "--recover-skip-hash-check"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("is for a copy of etcd's data dir"),
        "{}",
        r.stderr
    );
}

#[test]
fn an_interrupted_reset_is_never_repeated() {
    let w = world();
    // The reset takes effect, then the reboot drops the connection.
    w.set(|v| v["reset_drops"] = json!(true));
    let r = w.run(&["--yes", "etcd-recover"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let status = w.run(&["--json", "status"]).ok().json();
    assert_eq!(steps(&status)[0], "reset running");
    // Resumed: the nodes are rebooting (not answering): no check, no
    // second reset, no second prompt.
    let r = w.run(&["--json", "resume"]).ok().json();
    assert_eq!(steps(&r), ALL_DONE);
    assert_eq!(
        w.changing()
            .iter()
            .filter(|c| c.starts_with("reset"))
            .count(),
        1
    );
}

#[test]
fn a_node_that_does_not_come_back_stops_the_wait_and_resume_goes_on() {
    let w = world();
    w.set(|v| v["stuck_rebooting"] = json!(true));
    let r = w.run(&["--yes", "etcd-recover"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("step `rebooted`") && r.stderr.contains("192.168.0.230: not answering"),
        "{}",
        r.stderr
    );
    w.set(|v| v["stuck_rebooting"] = json!(false));
    let r = w.run(&["--json", "resume"]).ok().json();
    assert_eq!(steps(&r), ALL_DONE);
    assert_eq!(
        w.changing()
            .iter()
            .filter(|c| c.starts_with("reset"))
            .count(),
        1
    );
}

#[test]
fn an_interrupted_bootstrap_is_never_repeated() {
    let w = world();
    w.set(|v| v["bootstrap_drops"] = json!(true));
    let r = w.run(&["--yes", "etcd-recover"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    w.set(|v| v["bootstrap_drops"] = json!(false));
    let r = w.run(&["--json", "resume"]).ok().json();
    assert_eq!(steps(&r), ALL_DONE);
    assert_eq!(
        w.changing()
            .iter()
            .filter(|c| c.starts_with("bootstrap"))
            .count(),
        1
    );
    // After the bootstrap: the others never join, then do.
    let w = world();
    w.set(|v| v["no_join"] = json!(true));
    let r = w.run(&["--yes", "etcd-recover"]);
    assert!(
        r.stderr.contains("step `joined`")
            && r.stderr.contains("not yet: 192.168.0.231, 192.168.0.232"),
        "{}",
        r.stderr
    );
    w.set(|v| v["no_join"] = json!(false));
    let r = w.run(&["--json", "resume"]).ok().json();
    assert_eq!(steps(&r), ALL_DONE);
    assert_eq!(
        w.changing()
            .iter()
            .filter(|c| c.starts_with("bootstrap"))
            .count(),
        1
    );
}

#[test]
fn the_reset_needs_a_confirmation() {
    let w = world();
    let r = w.run(&["etcd-recover"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("not confirmed"), "{}", r.stderr);
    assert!(w.changing().is_empty());
}

#[test]
fn the_revision_agrees_with_a_real_etcdctl() {
    let path = common::project()
        .join("fixtures/backup-store")
        .join(SNAPSHOT);
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(&path)
        .output()
        .expect("etcdctl (Debian etcd-client) is installed by scripts/test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let real: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours = drgit::backup::bbolt::stats(&path).unwrap();
    assert_eq!(ours.revision, real["revision"].as_i64().unwrap());
}

#[test]
fn the_dry_run_report_without_talosctl() {
    // No talosctl here: the nodes are not checked, and it says so.
    let f = Fixture::new();
    let run = f.drgit(&["etcd-recover", "--dry-run"]);
    insta::assert_snapshot!(run.screen(&f));
}
