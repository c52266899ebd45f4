//! `drgit etcd-recover`: the real etcd snapshot of the fixture (and
//! corrupted copies), a real etcdctl's view of it, and a talosctl STAND-IN
//! (tests/support/talosctl-standin.py: per-node state in a file, every argv
//! recorded, the real tool's documented output, rules T1–T5).

mod common;

use common::Fixture;
use common::step_states as steps;
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
    // Each node's member/snap/db: the snapshot's database (its bbolt
    // file without the SHA-256 trailer), as old as the snapshot.
    let data_dir = f.dir.path().join("member-snap-db");
    let snap = std::fs::read(f.store().join(SNAPSHOT)).unwrap();
    std::fs::write(&data_dir, &snap[..snap.len() - 32]).unwrap();
    let nodes: serde_json::Map<String, Value> = CP
        .iter()
        .map(|n| {
            (
                n.to_string(),
                json!({"reachable": true, "etcd": "failed", "member": false, "db": data_dir.display().to_string(), "machine_type": "controlplane"}),
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
        "[talos]\ntalosctl = \"{}\"\npoll_ms = 10\nreboot_timeout_secs = 2\njoin_timeout_secs = 2\nrestore_timeout_secs = 2\nsettle_secs = 0\ncall_timeout_secs = 2\n",
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
    /// How many times a changing command (`reset`, `bootstrap`, `health`) ran.
    fn times(&self, verb: &str) -> usize {
        self.changing()
            .iter()
            .filter(|c| c.starts_with(verb))
            .count()
    }

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

const ALL_DONE: [&str; 6] = [
    "boot-ids done",
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
        // Reads only: the copies of what survives come to this machine.
        let read_only = a.ends_with(&["service".into(), "etcd".into()])
            || a.ends_with(&["etcd".into(), "members".into()])
            || a.ends_with(&["get".into(), "machinetype".into()])
            || a.contains(&"cp".to_string());
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
        "--wait-timeout=2s".into(),
    ]));
    // The exact sequence, reads of boot ids and repeated polls folded: the
    // checks before the prompt and again after it, then each command and
    // its wait.
    let mut seq: Vec<String> = Vec::new();
    for a in argvs.iter().filter(|a| !a.contains(&"read".to_string())) {
        let at = a.iter().position(|x| x == "-n").unwrap();
        let verb = a[at + 2..]
            .iter()
            .take_while(|x| !x.starts_with("--"))
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
        // `cp SRC DIR`: the directory is the run's own.
        let verb = if verb.starts_with("cp /var/lib/etcd/member/snap/db ") {
            "cp member/snap/db".to_string()
        } else {
            verb
        };
        let line = format!("{verb} @{}", a[at + 1]);
        if seq.last() != Some(&line) {
            seq.push(line);
        }
    }
    // `etcd members` goes to every node at once: their order is the
    // scheduler's.
    let mut folded: Vec<String> = Vec::new();
    for line in seq {
        match folded.last_mut() {
            Some(last)
                if last.starts_with("etcd members @")
                    && line.starts_with("etcd members @")
                    && last.matches(',').count() < CP.len() - 1 =>
            {
                let mut nodes: Vec<&str> = last["etcd members @".len()..]
                    .split(',')
                    .chain([&line["etcd members @".len()..]])
                    .collect();
                nodes.sort();
                *last = format!("etcd members @{}", nodes.join(","));
            }
            _ => folded.push(line),
        }
    }
    let seq = folded;
    let all = CP.join(",");
    let check = [
        format!("service etcd @{all}"),
        format!("etcd members @{all}"),
    ];
    // The plan's check (with the machine types and the copies of what
    // survives), then right before the prompt and again after it.
    let mut expected: Vec<String> = check.to_vec();
    expected.extend([
        format!("get machinetype @{all}"),
        "cp member/snap/db @192.168.0.230".into(),
        "cp member/snap/db @192.168.0.231".into(),
        "cp member/snap/db @192.168.0.232".into(),
    ]);
    for _ in 0..2 {
        expected.extend(check.iter().cloned());
        expected.push(format!("get machinetype @{all}"));
    }
    expected.extend([
        format!("reset @{all}"),
        format!("service etcd @{all}"),
        "bootstrap @192.168.0.230".into(),
        "service etcd @192.168.0.230".into(),
        "etcd members @192.168.0.230".into(),
        "service etcd @192.168.0.231".into(),
        "service etcd @192.168.0.232".into(),
        "etcd members @192.168.0.230".into(),
        "service etcd @192.168.0.232".into(),
        "etcd members @192.168.0.230".into(),
        "health @192.168.0.230".into(),
    ]);
    assert_eq!(seq, expected);
    // The boot ids were noted before the reset and read again after it.
    let reset_at = argvs
        .iter()
        .position(|a| a.contains(&"reset".to_string()))
        .unwrap();
    for node in CP {
        let reads = |r: &[Vec<String>]| {
            r.iter()
                .filter(|a| a.contains(&"read".to_string()) && a.contains(&node.to_string()))
                .count()
        };
        assert!(
            reads(&argvs[..reset_at]) >= 1 && reads(&argvs[reset_at..]) >= 1,
            "{node}"
        );
    }
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
    // The reset takes effect and the reboot drops the connection (talosctl
    // fails): drgit goes on and judges by the boot ids.
    w.set(|v| {
        v["reset_drops"] = json!(true);
        v["stuck_rebooting"] = json!(true);
    });
    let r = w.run(&["--yes", "etcd-recover"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("step `rebooted`"), "{}", r.stderr);
    // As if drgit had been killed right after sending the reset: the
    // journal says the step started and did not finish.
    let path = w.f.repo().join(".git/drgit/journal.json");
    let mut j: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    j["steps"][1]["status"] = json!("running");
    j["steps"][1]["output"] = Value::Null;
    std::fs::write(&path, j.to_string()).unwrap();
    w.set(|v| v["stuck_rebooting"] = json!(false));
    // Resumed: the nodes rebooted (new boot ids, or not answering yet):
    // none is reset again, nothing is asked.
    let r = w.run(&["--json", "resume"]).ok().json();
    assert_eq!(steps(&r), ALL_DONE);
    assert_eq!(r["steps"][1]["output"]["reset"], json!([]), "{r}");
    assert_eq!(w.times("reset"), 1);
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
    assert_eq!(w.times("reset"), 1);
}

#[test]
fn an_interrupted_bootstrap_is_never_repeated() {
    // The connection drops after the bootstrap took: etcd running says so.
    let w = world();
    w.set(|v| v["bootstrap_drops"] = json!(true));
    let r = w.run(&["--json", "--yes", "etcd-recover"]).ok().json();
    assert_eq!(steps(&r["wait"]), ALL_DONE);
    assert_eq!(w.times("bootstrap"), 1);
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
    assert_eq!(w.times("bootstrap"), 1);
}

#[test]
fn a_restore_that_fails_after_talosctl_exits_0_stops_and_resumes_after_a_reset() {
    // T4: the restore runs in etcd's pre stage, after the bootstrap returned.
    let w = world();
    w.set(|v| v["restore_fails_once"] = json!(true));
    let r = w.run(&["--yes", "etcd-recover"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let said = "etcd on 192.168.0.230 failed to restore the snapshot: [Failed]: Failed to run pre stage: error recovering from the snapshot: snapshot missing hash but --skip-hash-check=false (5s ago). Its data dir now holds the failed restore, so Talos refuses another bootstrap. Wipe that node alone: `";
    assert!(r.stderr.contains(said), "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "-n 192.168.0.230 reset --graceful=false --reboot --system-labels-to-wipe=EPHEMERAL --wait=false`"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(w.times("health"), 0, "not past the bootstrap");
    // A resume before the wipe sends nothing again and says the same.
    let again = w.run(&["--yes", "resume"]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains(said), "{}", again.stderr);
    assert_eq!(w.times("bootstrap"), 1);
    // Wiped by hand (T3): it waits in Preparing, and the resume bootstraps.
    w.set(|v| {
        let n = &mut v["nodes"]["192.168.0.230"];
        n["etcd"] = json!("preparing");
        n["member"] = json!(false);
        v["bootstrapped"] = json!(null);
    });
    let r = w.run(&["--json", "--yes", "resume"]).ok().json();
    assert_eq!(steps(&r), ALL_DONE);
    assert_eq!(w.times("bootstrap"), 2);
}

#[test]
fn an_init_node_refuses_the_reset() {
    let w = world();
    w.set(|v| v["nodes"]["192.168.0.231"]["machine_type"] = json!("init"));
    let r = w.run(&["--yes", "etcd-recover"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("192.168.0.231 is of machine type `init`: after the wipe it would start a new, empty etcd by itself")
            && r.stderr.contains("talosctl -n 192.168.0.231 edit mc --mode=staged"),
        "{}",
        r.stderr
    );
    assert_eq!(w.times("reset"), 0);
}

#[test]
fn a_node_made_init_before_the_confirmed_reset_is_refused_then() {
    // The machine type is checked again right before the reset (and after
    // its prompt), not only when the plan was made.
    let w = world();
    let r = w.run(&["etcd-recover"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("not confirmed"), "{}", r.stderr);
    w.set(|v| v["nodes"]["192.168.0.232"]["machine_type"] = json!("init"));
    let r = w.run(&["--yes", "resume"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("192.168.0.232 is of machine type `init`"),
        "{}",
        r.stderr
    );
    assert_eq!(w.times("reset"), 0);
}

#[test]
fn hanging_etcd_members_calls_are_killed_and_count_as_no_quorum() {
    // T2: etcd does not listen on any node; each call blocks until drgit
    // kills it after `call_timeout_secs`.
    let w = world();
    let r = w.run(&["etcd-recover", "--dry-run"]).ok();
    assert!(
        r.stdout.contains("Checked:  192.168.0.230: etcd Failed"),
        "{}",
        r.stdout
    );
    let pids = std::fs::read_to_string(w.state.with_extension("json.pids")).unwrap();
    let pids: Vec<&str> = pids.lines().collect();
    assert_eq!(pids.len(), 3, "one blocked call per node");
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "talosctl {pid} was left behind"
        );
    }
}

#[test]
fn a_members_call_that_hangs_where_etcd_runs_refuses_the_reset() {
    // Killed after its timeout on a node whose etcd is Running: silence
    // says nothing about quorum there.
    let w = world();
    w.set(|v| {
        v["nodes"]["192.168.0.231"]["etcd"] = json!("running-fail");
        v["members_hang"] = json!(true);
    });
    let r = w.run(&["--yes", "etcd-recover"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("`talosctl -n 192.168.0.231 etcd members` did not answer within 2s while etcd runs there: whether it still has quorum cannot be told"),
        "{}",
        r.stderr
    );
    assert_eq!(w.times("reset"), 0);
}

#[test]
fn what_survives_is_saved_first_and_a_newer_copy_is_named() {
    // Under the ordinary umask 022 (this test's process alone).
    unsafe { umask(0o022) };
    let w = world();
    let newer = common::project().join("fixtures/talos/member-snap-db");
    w.set(|v| {
        v["nodes"]["192.168.0.231"]["db"] = json!(newer.display().to_string());
        v["nodes"]["192.168.0.232"]["db"] = json!(null);
    });
    let r = w.run(&["--json", "etcd-recover", "--dry-run"]).ok().json();
    let saved = &r["surviving"];
    assert_eq!(saved[0]["revision"], 21);
    assert_eq!(
        saved[1]["revision"], 41,
        "the real etcd 3.4 data dir of the fixture"
    );
    assert!(
        saved[2]["error"]
            .as_str()
            .unwrap()
            .contains("lstat /var/lib/etcd/member/snap/db: no such file or directory"),
        "{saved}"
    );
    let copy = saved[1]["file"].as_str().unwrap().to_string();
    let lines: Vec<&str> = r["saved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        lines.iter().any(|l| l.starts_with(&format!("NEWER THAN THE SNAPSHOT: 192.168.0.231's data has revision 41, the snapshot 21; to restore from it instead: `drgit etcd-recover --snapshot {copy} --recover-skip-hash-check`"))),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("192.168.0.232: etcd data NOT saved")),
        "{lines:#?}"
    );
    // A real run keeps the copies, each as its SHA-256 says.
    let r = w.run(&["--json", "--yes", "etcd-recover"]).ok().json();
    let kept = &r["surviving"][1];
    let file = std::path::PathBuf::from(kept["file"].as_str().unwrap());
    assert!(
        file.starts_with(w.f.repo().join(".git/drgit/etcd-recover")),
        "{}",
        file.display()
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(&newer).unwrap()
    );
    let sha = {
        use sha2::Digest;
        sha2::Sha256::digest(std::fs::read(&newer).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_eq!(kept["sha256"].as_str().unwrap(), sha);
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(&file),
        0o600,
        "etcd's data holds the cluster's Secrets"
    );
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    // The downloaded snapshot and the journal too, whatever the umask.
    let git = w.f.repo().join(".git/drgit");
    assert_eq!(mode(&git.join("etcd-recover/20261126T030246Z.db")), 0o600);
    assert_eq!(mode(&git.join("etcd-recover")), 0o700);
    assert_eq!(mode(&git.join("journal.done.json")), 0o600);
}

#[test]
fn a_copy_caught_mid_write_is_not_offered() {
    // A page of the newest tree overwritten by another, as a copy of a
    // file etcd writes to may be: bbolt's own check would refuse it.
    let w = world();
    let mut torn = std::fs::read(common::project().join("fixtures/talos/member-snap-db")).unwrap();
    let page2 = torn[2 * 4096..3 * 4096].to_vec();
    torn[3 * 4096..4 * 4096].copy_from_slice(&page2);
    let file = w.f.dir.path().join("torn-db");
    std::fs::write(&file, &torn).unwrap();
    w.set(|v| v["nodes"]["192.168.0.231"]["db"] = json!(file.display().to_string()));
    let r = w.run(&["--json", "etcd-recover", "--dry-run"]).ok().json();
    assert_eq!(
        r["surviving"][1]["error"],
        "the copy is not consistent (etcd may have written during it): page 3 says it is page 2"
    );
    let saved = r["saved"].to_string();
    assert!(!saved.contains("NEWER"), "{saved}");
}

#[test]
fn nothing_saved_refuses_unless_told_to_go_on() {
    let w = world();
    w.set(|v| {
        for n in CP {
            v["nodes"][n]["db"] = json!(null);
        }
    });
    let r = w.run(&["--yes", "etcd-recover"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("no control plane's etcd data could be saved before the reset")
            && r.stderr.contains("--no-surviving-copy"),
        "{}",
        r.stderr
    );
    assert_eq!(w.times("reset"), 0);
    let r = w
        .run(&["--json", "--yes", "etcd-recover", "--no-surviving-copy"])
        .ok()
        .json();
    assert_eq!(steps(&r["wait"]), ALL_DONE);
}

#[test]
fn a_node_that_gave_up_waiting_for_the_bootstrap_is_named() {
    // T10: after EtcdJoinTimeout a node's etcd is Failed; waiting longer
    // would not mend it.
    let w = world();
    w.set(|v| v["join_timeout"] = json!(["192.168.0.232"]));
    let r = w.run(&["--yes", "etcd-recover"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("192.168.0.232 waited for the bootstrap longer than Talos allows (30 minutes, constants.EtcdJoinTimeout) and its etcd failed: reboot it (`")
            && r.stderr.contains("-n 192.168.0.232 reboot`"),
        "{}",
        r.stderr
    );
    assert_eq!(w.times("bootstrap"), 0);
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

#[test]
fn a_reset_refused_on_one_node_resumes_with_that_node_only() {
    let w = world();
    w.set(|v| v["reset_denied"] = json!(["192.168.0.232"]));
    let r = w.run(&["--yes", "etcd-recover"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("PermissionDenied"), "{}", r.stderr);
    w.set(|v| v["reset_denied"] = json!([]));
    let r = w.run(&["--yes", "--json", "resume"]).ok().json();
    assert_eq!(steps(&r), ALL_DONE);
    assert_eq!(
        w.changing(),
        [
            "reset @192.168.0.230,192.168.0.231,192.168.0.232",
            "reset @192.168.0.232",
            "bootstrap @192.168.0.230",
            "health @192.168.0.230",
        ]
    );
}

#[test]
fn members_with_quorum_refuse_the_reset_even_when_none_is_healthy() {
    let w = world();
    w.set(|v| {
        for n in ["192.168.0.230", "192.168.0.231"] {
            v["nodes"][n] = json!({"reachable": true, "etcd": "running-fail", "member": true});
        }
    });
    let r = w.run(&["--yes", "etcd-recover"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("etcd members` answers: etcd still has quorum (2 member(s))"),
        "{}",
        r.stderr
    );
    assert!(w.changing().is_empty());
}

#[test]
fn a_snapshot_changed_before_the_bootstrap_stops_it() {
    let w = world();
    w.set(|v| v["stuck_rebooting"] = json!(true));
    let r = w.run(&["--yes", "etcd-recover"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let local =
        w.f.repo()
            .join(".git/drgit/etcd-recover/20261126T030246Z.db");
    let mut bytes = std::fs::read(&local).unwrap();
    bytes[4000] ^= 1;
    std::fs::write(&local, bytes).unwrap();
    w.set(|v| v["stuck_rebooting"] = json!(false));
    let r = w.run(&["--yes", "resume"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("changed since it was verified")
            && r.stderr
                .contains("drgit backups download etcd 20261126T030246Z.db -o"),
        "{}",
        r.stderr
    );
    assert_eq!(w.times("bootstrap"), 0);
}

unsafe extern "C" {
    fn umask(mask: u32) -> u32;
}
