//! `pg-recover --wait`: the whole runbook against a real Git remote, a
//! FAKE GitHub and a FAKE Kubernetes API server playing Argo CD and CNPG by
//! their documented rules (tests/common/fake_cluster.rs names each): the
//! order of switch, fence, sync and delete, the refusals that keep data
//! safe, and the journal that lets an interrupted run resume without
//! repeating a destructive step.

mod common;

use common::fake_cluster::{Behaviour, FakeCluster};
use common::fake_github::FakeGitHub;
use common::{Fixture, TARGET};

const TOKEN: &str = "ghp_wait_test";

struct World {
    f: Fixture,
    gh: FakeGitHub,
    kube: FakeCluster,
    kubeconfig: String,
    bare: std::path::PathBuf,
}

fn world(behaviour: Behaviour) -> World {
    let f = Fixture::new();
    let bare = f.add_remote(None);
    let gh = FakeGitHub::start("home", "home-cluster", TOKEN);
    {
        let mut st = gh.state.lock().unwrap();
        st.merge_after_polls = Some(1);
        st.bare_repo = Some(bare.clone());
    }
    let kube = FakeCluster::start_with_store(bare.clone(), Some(f.store()), behaviour);
    let kubeconfig = kube.kubeconfig(f.dir.path()).display().to_string();
    let w = World {
        f,
        gh,
        kube,
        kubeconfig,
        bare,
    };
    timeouts(&w, 2, 5);
    w
}

/// drgit.toml for the world: fast polls and these timeouts, in seconds.
fn timeouts(w: &World, sync: u64, recovery: u64) {
    w.f.config(&format!(
        "[forge]\napi_url = \"{}\"\nrepo = \"home/home-cluster\"\nmerge_poll_ms = 10\n\n[argocd]\npoll_ms = 10\nsync_timeout_secs = {sync}\nself_heal_grace_secs = 1\n\n[postgres]\nhealth_poll_ms = 10\nrecovery_timeout_secs = {recovery}\narchive_timeout_secs = 2\nfence_timeout_secs = 2\n",
        w.gh.url
    ));
}

fn run(w: &World, args: &[&str]) -> common::Run {
    let mut all = vec!["--kubeconfig", w.kubeconfig.as_str()];
    all.extend_from_slice(args);
    w.f.drgit_env(&all, &[("GITHUB_TOKEN", TOKEN)])
}

fn recover(w: &World, extra: &[&str]) -> common::Run {
    let mut args = vec![
        "--yes",
        "pg-recover",
        "--target-time",
        TARGET,
        "--pr",
        "--wait",
    ];
    args.extend_from_slice(extra);
    run(w, &args)
}

const CLUSTER: &str = "/apis/postgresql.cnpg.io/v1/namespaces/database/clusters/shared-pg";
const APP: &str = "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/database";

fn steps(r: &common::Run) -> Vec<String> {
    common::step_states(&r.json()["wait"])
}

fn step_output(r: &common::Run, name: &str) -> serde_json::Value {
    r.json()["wait"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()["output"]
        .clone()
}

/// Where the last request matching `what` is among `calls`.
fn last_call(calls: &[String], what: impl Fn(&str) -> bool) -> usize {
    calls
        .iter()
        .rposition(|c| what(c))
        .unwrap_or_else(|| panic!("no such request in {calls:#?}"))
}

/// The run stopped with `words` and deleted nothing.
fn refused(w: &World, r: &common::Run, words: &str) {
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains(words), "{}", r.stderr);
    assert_eq!(w.kube.state.lock().unwrap().deletes, 0);
}

/// `pg-recover --pr --wait` without `--yes`: it stops at the first prompt.
fn recover_unconfirmed(w: &World) -> common::Run {
    run(
        w,
        &["pg-recover", "--target-time", TARGET, "--pr", "--wait"],
    )
}

/// Objects in a lineage of the fixture's store.
fn lineage_objects(w: &World, lineage: &str) -> usize {
    fn count(p: &std::path::Path) -> usize {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            count(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    count(&w.f.store().join(format!("cnpg/{lineage}")))
}

#[test]
fn the_whole_runbook_in_the_right_order() {
    let w = world(Behaviour::default());
    let r = recover(&w, &["--json", "--auto-revert"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        steps(&r),
        vec![
            "old-cluster done",
            "fence done",
            "merged done",
            "argocd-synced done",
            "delete-cluster done",
            "recreated done",
            "recovered done",
            "backup done",
            "revert-pr done"
        ]
    );

    // WAL switched and archived (into the old lineage) before the fence,
    // the fence before Argo CD applied the change, the delete after.
    let switch = w
        .kube
        .first("EXEC psql -U postgres -AtX -c select pg_walfile_name(pg_switch_wal())")
        .expect("switch");
    let fence = w.kube.first(&format!("PATCH {CLUSTER}")).expect("fence");
    let refresh = w.kube.first(&format!("PATCH {APP}")).expect("refresh");
    let delete = w.kube.first(&format!("DELETE {CLUSTER}")).expect("delete");
    assert!(switch < fence && fence < refresh && refresh < delete);
    let fenced = step_output(&r, "fence");
    assert_eq!(fenced["archived"], "00000001000000000000000B");
    assert_eq!(
        step_output(&r, "old-cluster")["uid"],
        "00000000-0000-0000-0000-000000000001"
    );
    {
        let st = w.kube.state.lock().unwrap();
        assert_eq!(st.deletes, 1);
        assert_eq!(st.fences, 1);
        // C1: a fenced primary archived nothing into the new lineage.
        assert!(
            st.archived.iter().all(|k| k.starts_with("cnpg/shared-pg/")),
            "{:?}",
            st.archived
        );
        assert_eq!(st.syncs_started, 0, "self-heal re-created it");
        assert_eq!(
            st.cluster.as_ref().unwrap().uid,
            "00000000-0000-0000-0000-000000000002"
        );
        assert_eq!(st.backups.len(), 1, "the on-demand Backup");
    }
    assert_eq!(lineage_objects(&w, "shared-pg-2"), 0);
    let merge = w.gh.prs()[0].merge_sha.clone().expect("merged");
    assert_eq!(step_output(&r, "argocd-synced")["revision"], merge);
    assert_eq!(
        step_output(&r, "recreated")["uid"],
        "00000000-0000-0000-0000-000000000002"
    );
    assert_eq!(step_output(&r, "backup")["phase"], "completed");

    // The revert pull request came only after the Backup completed.
    let prs = w.gh.prs();
    assert_eq!(prs.len(), 2);
    assert_eq!(prs[1].head, "drgit/pg-revert-shared-pg");
    let backup_done = w
        .kube
        .state
        .lock()
        .unwrap()
        .requests
        .iter()
        .rfind(|(_, r)| r.contains("/backups/"))
        .map(|(t, _)| *t)
        .unwrap();
    let revert_opened =
        w.gh.requests()
            .into_iter()
            .find(|r| {
                r.method == "POST"
                    && r.path.ends_with("/pulls")
                    && r.body["head"] == "drgit/pg-revert-shared-pg"
            })
            .expect("revert PR opened")
            .at;
    assert!(backup_done < revert_opened, "backup first, then the revert");
    let status = run(&w, &["status"]);
    assert!(
        status.stdout.contains("[done   ] revert-pr"),
        "{}",
        status.stdout
    );
    // What `drgit status` shows, the start time aside.
    let shown = status.screen(&w.f);
    let start = shown.find("(started ").unwrap();
    let end = start + shown[start..].find(')').unwrap() + 1;
    insta::assert_snapshot!(format!(
        "{}(started [TIME]){}",
        &shown[..start],
        &shown[end..]
    ));
}

#[test]
fn without_self_heal_drgit_starts_the_sync_and_waits_for_the_new_cluster() {
    // A3: Argo CD does not re-create a resource deleted at an already
    // synced revision. The old Cluster's frozen "healthy" status (C3) is
    // not a recovery.
    let w = world(Behaviour {
        self_heal: false,
        terminating_gets: 4,
        ..Behaviour::default()
    });
    let r = recover(&w, &["--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let st = w.kube.state.lock().unwrap();
    assert_eq!(st.syncs_started, 1);
    let c = st.cluster.as_ref().expect("re-created");
    assert_eq!(c.uid, "00000000-0000-0000-0000-000000000002");
    assert!(c.recovery && c.terminating.is_none());
    assert_eq!(step_output(&r, "recreated")["sync_started"], true);
    assert_eq!(step_output(&r, "recovered")["uid"], c.uid);
}

#[test]
fn drgit_syncs_as_argocd_app_sync_does_and_starts_a_failed_sync_again() {
    // A4: the operation carries the Application's syncOptions (the
    // controller reads no others), the revision drgit verified, the Cluster
    // as its only resource and a retry; one that ends in Error is started
    // again.
    let w = world(Behaviour {
        self_heal: false,
        sync_options: vec!["ServerSideApply=true", "RespectIgnoreDifferences=true"],
        sync_errors: 1,
        ..Behaviour::default()
    });
    let r = recover(&w, &["--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let synced = step_output(&r, "argocd-synced")["revision"].clone();
    let st = w.kube.state.lock().unwrap();
    assert_eq!(st.operations.len(), 2, "{:?}", st.operations);
    for op in &st.operations {
        assert_eq!(
            op["sync"]["syncOptions"],
            serde_json::json!(["ServerSideApply=true", "RespectIgnoreDifferences=true"]),
            "{op}"
        );
        assert_eq!(op["sync"]["revision"], synced, "{op}");
        assert_eq!(
            op["sync"]["resources"],
            serde_json::json!([{"group": "postgresql.cnpg.io", "kind": "Cluster", "name": "shared-pg", "namespace": "database"}]),
            "{op}"
        );
        assert_eq!(op["retry"]["limit"], 5, "{op}");
    }
    assert!(st.cluster.as_ref().is_some_and(|c| c.recovery));
}

#[test]
fn a_sync_that_keeps_failing_stops_with_argo_cds_message() {
    let w = world(Behaviour {
        self_heal: false,
        sync_errors: 10,
        ..Behaviour::default()
    });
    let r = recover(&w, &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("ended Error 3 time(s)") && r.stderr.contains("failed calling webhook"),
        "{}",
        r.stderr
    );
    assert_eq!(w.kube.state.lock().unwrap().syncs_started, 3);
}

#[test]
fn an_application_without_automated_sync_is_synced_by_drgit() {
    // A4: nothing applies the recovery change unless someone syncs: drgit
    // does, at the revision holding the commit, then re-creates the Cluster.
    let w = world(Behaviour {
        automated: false,
        self_heal: false,
        ..Behaviour::default()
    });
    let r = recover(&w, &["--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let merge = w.gh.prs()[0].merge_sha.clone().unwrap();
    let st = w.kube.state.lock().unwrap();
    assert_eq!(st.operations.len(), 2, "{:?}", st.operations);
    // The first applies the whole change, the second only the Cluster.
    assert_eq!(st.operations[0]["sync"]["revision"], merge.as_str());
    assert!(st.operations[0]["sync"]["resources"].is_null());
    assert_eq!(st.operations[1]["sync"]["resources"][0]["kind"], "Cluster");
    assert!(
        st.cluster
            .as_ref()
            .is_some_and(|c| c.recovery && c.recreated)
    );
}

#[test]
fn a_later_push_does_not_stall_the_sync_wait_and_an_older_revision_is_refused() {
    // A1: someone pushes right after the recovery commit: Argo CD reports
    // the newer head, which contains the recovery commit.
    let w = world(Behaviour {
        push_after_merge: true,
        ..Behaviour::default()
    });
    let r = recover(&w, &["--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let merge = w.gh.prs()[0].merge_sha.clone().unwrap();
    let head = common::run_git(&w.bare, &["rev-parse", "main"], "t", "t@example.com");
    let synced = step_output(&r, "argocd-synced")["revision"].clone();
    assert_eq!(synced, head.trim());
    assert_ne!(synced, merge.as_str());

    // Argo CD still reports the revision before the recovery commit: not
    // good enough, whatever its sync status says.
    let w = world(Behaviour {
        never_sync: true,
        stale_revision: true,
        ..Behaviour::default()
    });
    let r = recover(&w, &[]);
    refused(&w, &r, "did not report Synced at");
}

#[test]
fn no_fence_or_delete_without_confirmation_then_resume_goes_on() {
    let w = world(Behaviour::default());
    let r = recover_unconfirmed(&w);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("not confirmed: Switch WAL on the old primary of database/shared-pg"),
        "{}",
        r.stderr
    );
    assert_eq!(w.kube.state.lock().unwrap().fences, 0);
    let status = run(&w, &["status"]);
    assert!(
        status.stdout.contains("[done   ] old-cluster"),
        "{}",
        status.stdout
    );
    // No WAL switch before the confirmation: nothing archived yet.
    assert!(w.kube.state.lock().unwrap().archived.is_empty());
    // A second run is refused while this one is unfinished.
    let before = w.f.state();
    let again = run(
        &w,
        &[
            "--yes",
            "pg-recover",
            "--target-time",
            TARGET,
            "--pr",
            "--wait",
        ],
    );
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert!(
        again.stderr.contains("an interrupted run is recorded in"),
        "{}",
        again.stderr
    );
    assert_eq!(w.f.state(), before);
    assert!(
        status.stdout.contains("[pending] fence"),
        "{}",
        status.stdout
    );

    let r = run(&w, &["--json", "--yes", "resume"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(w.kube.state.lock().unwrap().deletes, 1);
    let again = run(&w, &["--yes", "resume"]);
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("no interrupted run to resume"),
        "{}",
        again.stderr
    );
}

#[test]
fn delete_is_refused_when_argo_cd_is_not_synced_or_the_spec_is_old() {
    let w = world(Behaviour {
        never_sync: true,
        ..Behaviour::default()
    });
    let r = recover(&w, &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("did not report Synced at"),
        "{}",
        r.stderr
    );
    assert_eq!(w.kube.state.lock().unwrap().deletes, 0);

    let w = world(Behaviour {
        keep_old_spec: true,
        ..Behaviour::default()
    });
    let r = recover(&w, &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(
            "refusing to delete the Cluster: the live Cluster still bootstraps with initdb"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(w.kube.state.lock().unwrap().deletes, 0);
}

#[test]
fn cnpg_failure_texts_stop_the_watch() {
    let w = world(Behaviour {
        phases: vec![
            ("Setting up primary", None),
            (
                "Cluster is unrecoverable and needs manual intervention",
                Some("recovery ended before configured recovery target was reached"),
            ),
        ],
        ..Behaviour::default()
    });
    let r = recover(&w, &["--auto-revert"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(
            "the recovery of CNPG Cluster database/shared-pg failed: Cluster is unrecoverable"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(w.gh.prs().len(), 1, "no revert pull request");
}

/// Starts `--wait`, interrupts it (SIGINT) once `ready` holds, lets `fix`
/// change the world, and resumes; returns the resumed run.
fn interrupt_and_resume(
    w: &World,
    step: &str,
    ready: impl Fn(&World) -> bool,
    fix: impl Fn(&World),
) -> common::Run {
    let mut all = vec![
        "--kubeconfig".to_string(),
        w.kubeconfig.clone(),
        "--repo".into(),
        w.f.repo().display().to_string(),
    ];
    all.extend(
        [
            "--yes",
            "pg-recover",
            "--target-time",
            TARGET,
            "--pr",
            "--wait",
        ]
        .map(String::from),
    );
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_drgit"))
        .args(&all)
        .env("GITHUB_TOKEN", TOKEN)
        .env("DRGIT_NOW", common::NOW)
        .env("HOME", std::env::temp_dir().join("drgit-test-home"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..400 {
        if ready(w) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(ready(w), "{step}: never reached");
    std::thread::sleep(std::time::Duration::from_millis(150));
    unsafe { libc_kill(child.id() as i32, 2) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{step}: {stderr}");
    assert!(
        stderr.contains(&format!("interrupted in step `{step}`")),
        "{step}: {stderr}"
    );
    fix(w);
    run(w, &["--yes", "resume"])
}

#[test]
fn interrupted_at_each_wait_resumes_without_a_second_delete() {
    // Waiting for the merge.
    let w = world(Behaviour::default());
    w.gh.state.lock().unwrap().merge_after_polls = Some(1_000_000);
    let r = interrupt_and_resume(
        &w,
        "merged",
        |w| w.gh.prs().len() == 1 && w.kube.state.lock().unwrap().fences == 1,
        |w| w.gh.state.lock().unwrap().prs[0].merge_after_polls = Some(0),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(w.kube.state.lock().unwrap().deletes, 1);
    assert_eq!(w.kube.state.lock().unwrap().fences, 1, "fenced once");
    // Waiting for Argo CD.
    let w = world(Behaviour {
        never_sync: true,
        ..Behaviour::default()
    });
    timeouts(&w, 30, 5);
    let r = interrupt_and_resume(
        &w,
        "argocd-synced",
        |w| w.kube.first(&format!("PATCH {APP}")).is_some(),
        |w| w.kube.state.lock().unwrap().behaviour.never_sync = false,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(w.kube.state.lock().unwrap().deletes, 1);
    // Waiting for the re-creation, after the delete.
    let w = world(Behaviour {
        terminating_gets: 1_000_000,
        ..Behaviour::default()
    });
    timeouts(&w, 30, 5);
    let r = interrupt_and_resume(
        &w,
        "recreated",
        |w| w.kube.state.lock().unwrap().deletes == 1,
        |w| {
            let mut st = w.kube.state.lock().unwrap();
            st.cluster.as_mut().unwrap().terminating = Some(0);
        },
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        w.kube.state.lock().unwrap().deletes,
        1,
        "the delete ran once"
    );
}

#[test]
fn a_new_lineage_filled_before_the_delete_is_refused() {
    // Between the fence and the delete something archived into the new
    // lineage (a primary Argo CD reached first): CNPG would answer
    // "Expected empty archive", so nothing is deleted.
    let w = world(Behaviour::default());
    w.gh.state.lock().unwrap().merge_after_polls = Some(1_000_000);
    let r = interrupt_and_resume(
        &w,
        "merged",
        |w| w.gh.prs().len() == 1 && w.kube.state.lock().unwrap().fences == 1,
        |w| {
            let dir = w.f.store().join("cnpg/shared-pg-2/wals/0000000100000000");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("00000001000000000000000C.gz"), b"wal").unwrap();
            w.gh.state.lock().unwrap().prs[0].merge_after_polls = Some(0);
        },
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("the new lineage `shared-pg-2` is no longer empty (cnpg/shared-pg-2/wals/0000000100000000/00000001000000000000000C.gz)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("Run `drgit pg-recover` again"),
        "{}",
        r.stderr
    );
    assert_eq!(w.kube.state.lock().unwrap().deletes, 0);
}

#[test]
fn a_fence_that_takes_time_is_waited_for_before_anything_is_merged() {
    // C2: PostgreSQL keeps running (and archiving under the live spec)
    // for a while after the annotation; the merge waits until it is down.
    let w = world(Behaviour {
        fence_looks: 12,
        ..Behaviour::default()
    });
    let r = recover(&w, &["--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        lineage_objects(&w, "shared-pg-2"),
        0,
        "nothing archived there"
    );
    assert_eq!(
        step_output(&r, "fence")["down"],
        serde_json::json!(["shared-pg-1", "shared-pg-2"])
    );
    // The last look at the instances (psql answering no more) came before
    // Argo CD was asked to refresh.
    let calls = w.kube.calls();
    let last_select = last_call(&calls, |c| {
        c.starts_with("EXEC psql -U postgres -AtX -c select 1 @shared-pg-")
    });
    let refresh = calls
        .iter()
        .position(|c| c == &format!("PATCH {APP}"))
        .expect("refresh");
    assert!(last_select < refresh, "{calls:#?}");
}

#[test]
fn a_fence_that_does_not_take_stops_before_the_merge() {
    let w = world(Behaviour {
        fence_looks: 1_000_000,
        ..Behaviour::default()
    });
    let r = recover(&w, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "CNPG Cluster database/shared-pg is fenced, but PostgreSQL was not down in every instance within"
        ) && r.stderr.contains("shared-pg-1: PostgreSQL is still shutting down")
            && r.stderr.contains("nothing was merged or pushed"),
        "{}",
        r.stderr
    );
    assert!(!w.gh.prs()[0].merged, "not merged");
    assert!(
        w.kube.first(&format!("PATCH {APP}")).is_none(),
        "Argo CD not asked"
    );
    assert_eq!(w.kube.state.lock().unwrap().deletes, 0);
}

#[test]
fn commits_made_while_the_archive_is_awaited_are_switched_out_too() {
    // C6: a commit comes in while drgit waits for the first segment (a
    // new transaction id); the second switch completes the segment that
    // holds it, and no id is taken while its archive is awaited.
    let w = world(Behaviour {
        commits_during_archive: 1,
        ..Behaviour::default()
    });
    let r = recover(&w, &["--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let fenced = step_output(&r, "fence");
    assert_eq!(fenced["archived"], "00000001000000000000000C");
    assert_eq!(fenced["switches"], 2);
    assert_eq!(fenced["newest_commit"], "2026-11-26T03:59:00Z");
    let switches: Vec<std::time::Instant> = w
        .kube
        .state
        .lock()
        .unwrap()
        .requests
        .iter()
        .filter(|(_, r)| r.contains("pg_switch_wal()"))
        .map(|(t, _)| *t)
        .collect();
    let fence = w.kube.first(&format!("PATCH {CLUSTER}")).expect("fence");
    assert_eq!(switches.len(), 2);
    assert!(switches.iter().all(|t| *t < fence));
    let status = run(&w, &["status"]);
    assert!(
        status.stdout.contains(
            "in the bucket up to 00000001000000000000000C of `shared-pg`: the newest commit there is at 2026-11-26T03:59:00Z (in 00000001000000000000000C); anything committed after the last switch is not"
        ),
        "{}",
        status.stdout
    );
}

#[test]
fn delete_is_refused_when_the_old_cluster_is_no_longer_fenced() {
    // Someone lifted the fence while drgit waited for the merge; the
    // primary has not archived into the new lineage yet (archive_timeout).
    let w = world(Behaviour {
        archive_at_once: false,
        ..Behaviour::default()
    });
    w.gh.state.lock().unwrap().merge_after_polls = Some(1_000_000);
    let r = interrupt_and_resume(
        &w,
        "merged",
        |w| w.gh.prs().len() == 1 && w.kube.state.lock().unwrap().fences == 1,
        |w| {
            let mut st = w.kube.state.lock().unwrap();
            let c = st.cluster.as_mut().unwrap();
            c.fenced = false;
            c.down = false;
            drop(st);
            w.gh.state.lock().unwrap().prs[0].merge_after_polls = Some(0);
        },
    );
    refused(
        &w,
        &r,
        "refusing to delete the Cluster: the old Cluster is not fenced",
    );
}

#[test]
fn delete_is_refused_when_the_live_cluster_keeps_its_old_lineage() {
    let w = world(Behaviour {
        keep_old_server_name: true,
        ..Behaviour::default()
    });
    let r = recover(&w, &[]);
    refused(
        &w,
        &r,
        "refusing to delete the Cluster: the live Cluster archives as `shared-pg`, not the new lineage `shared-pg-2`",
    );
}

#[test]
fn delete_is_refused_when_argo_cd_drifted_after_the_sync() {
    // Synced once (the wait accepted it), OutOfSync at the delete's check.
    let w = world(Behaviour {
        drift_after_synced: Some(1),
        ..Behaviour::default()
    });
    let r = recover(&w, &[]);
    refused(
        &w,
        &r,
        "refusing to delete the Cluster: Argo CD Application database is OutOfSync",
    );
}

#[test]
fn a_change_argo_cd_applied_before_the_fence_stops_at_the_fence() {
    // The pull request was merged by hand before the fence was confirmed:
    // Argo CD applied the new lineage to a running primary, which archived
    // there (C1). The fence step says so; nothing goes further.
    let w = world(Behaviour::default());
    let r = recover_unconfirmed(&w);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let head = w.gh.prs()[0].head.clone();
    common::bare_git(
        &w.bare,
        &[
            "update-ref",
            "refs/heads/main",
            &format!("refs/heads/{head}"),
        ],
    )
    .expect("merged by hand");
    let r = run(&w, &["--yes", "resume"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("the new lineage `shared-pg-2` is no longer empty"),
        "{}",
        r.stderr
    );
    let status = run(&w, &["status"]);
    assert!(
        status.stdout.contains("[running] fence"),
        "{}",
        status.stdout
    );
    assert_eq!(w.kube.state.lock().unwrap().deletes, 0);
}

#[test]
fn without_self_heal_the_old_volumes_go_before_the_cluster_is_re_created() {
    // C7: the PVCs outlive the Cluster; the sync waits for them.
    let w = world(Behaviour {
        self_heal: false,
        pvc_looks: 6,
        ..Behaviour::default()
    });
    let r = recover(&w, &["--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let st = w.kube.state.lock().unwrap();
    assert_eq!(st.syncs_started, 1);
    assert!(!st.cluster.as_ref().unwrap().stuck_on_pvc);
    assert_eq!(st.delete_policies, vec!["Foreground"], "never orphaned");
    drop(st);
    let calls = w.kube.calls();
    let last_pvcs = last_call(&calls, |c| c.contains("/persistentvolumeclaims"));
    let sync = last_call(&calls, |c| c == format!("PATCH {APP}"));
    assert!(last_pvcs < sync, "{calls:#?}");
}

#[test]
fn with_self_heal_a_recovery_bound_to_the_old_volume_says_what_to_do() {
    // C7: Argo CD re-created the Cluster while its old volumes still
    // terminated; CNPG before 1.30 bound the recovery to one of them, which
    // then either still terminates or is gone already.
    for (looks, words) in [(8, "is being deleted."), (3, "not found.")] {
        let w = world(Behaviour {
            pvc_looks: looks,
            ..Behaviour::default()
        });
        timeouts(&w, 2, 30);
        let r = recover(&w, &[]);
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(
            r.stderr.contains(&format!("the re-created CNPG Cluster database/shared-pg cannot start: its pod shared-pg-1-full-recovery-x7k2p is unschedulable (0/3 nodes are available: persistentvolumeclaim \"shared-pg-1\" {words}"))
                && r.stderr.contains("cloudnative-pg #11017")
                && r.stderr.contains("`kubectl -n database get pvc -l cnpg.io/cluster=shared-pg` lists none, then `drgit resume`"),
            "{looks}: {}",
            r.stderr
        );
    }
}

#[test]
fn a_volume_left_behind_by_the_deleted_cluster_stops_the_re_create() {
    // A PVC that outlives the Cluster without being deleted (orphaned)
    // would be adopted: the new Cluster would start from the old data.
    let w = world(Behaviour {
        self_heal: false,
        orphan_pvc: true,
        ..Behaviour::default()
    });
    let r = recover(&w, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("its volume shared-pg-1 is not being deleted (orphaned?): a re-created Cluster would adopt it and start from the old data instead of recovering"),
        "{}",
        r.stderr
    );
    assert_eq!(
        w.kube.state.lock().unwrap().syncs_started,
        0,
        "no sync started"
    );
}

#[test]
fn transient_api_errors_and_conflicts_are_retried() {
    let w = world(Behaviour::default());
    {
        let mut st = w.kube.state.lock().unwrap();
        st.faults.push((format!("PATCH {APP}"), 409));
        st.faults.push((format!("GET {CLUSTER}"), 500));
        st.faults.push((format!("GET {CLUSTER}"), 503));
    }
    let r = recover(&w, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        w.kube.state.lock().unwrap().faults.is_empty(),
        "{:?}",
        w.kube.state.lock().unwrap().faults
    );
    assert_eq!(w.kube.state.lock().unwrap().deletes, 1);
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn a_failed_recovery_job_stops_the_watch_with_its_log() {
    let w = world(Behaviour {
        job_fails: Some("no target backup found"),
        ..Behaviour::default()
    });
    let r = recover(&w, &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(
            "Job shared-pg-1-full-recovery failed: Job has reached the specified backoff limit"
        ),
        "{}",
        r.stderr
    );
    // CNPG's reason is in the pod's log only.
    assert!(
        r.stderr
            .contains("--- shared-pg-1-full-recovery-x7k2p (full-recovery):"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("no target backup found"), "{}", r.stderr);
}

#[test]
fn retried_job_pods_are_not_a_failure() {
    // C4: failed pods while the Job is not Failed are retries.
    let w = world(Behaviour {
        job_retries: 3,
        phases: vec![
            ("Setting up primary", None),
            ("Setting up primary", None),
            ("Setting up primary", None),
            ("Setting up primary", None),
            ("Cluster in healthy state", None),
        ],
        ..Behaviour::default()
    });
    let r = recover(&w, &["--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The re-created Cluster was watched through the retries.
    assert_eq!(
        step_output(&r, "recovered")["uid"],
        "00000000-0000-0000-0000-000000000002"
    );
    let job_reads = w
        .kube
        .calls()
        .iter()
        .filter(|c| c.ends_with("/jobs/shared-pg-1-full-recovery"))
        .count();
    assert!(job_reads >= 4, "{job_reads}");
}

#[test]
fn a_failed_backup_is_reported_and_resumable() {
    let w = world(Behaviour {
        backup_fails: Some("can't upload: AccessDenied"),
        ..Behaviour::default()
    });
    let r = recover(&w, &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("the on-demand Backup database/shared-pg-drgit-")
            && r.stderr.contains("failed: can't upload: AccessDenied"),
        "{}",
        r.stderr
    );
    let status = run(&w, &["status"]);
    assert!(
        status.stdout.contains("[done   ] recovered"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("[running] backup"),
        "{}",
        status.stdout
    );
}

#[test]
fn a_backup_with_an_invalid_definition_is_final() {
    // CNPG 1.30 leaves such a Backup as it is: waiting would only time out.
    let w = world(Behaviour {
        backup_invalid: Some("the cluster has no backup configuration"),
        ..Behaviour::default()
    });
    timeouts(&w, 1800, 1);
    let r = recover(&w, &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("failed: the cluster has no backup configuration"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("within"), "{}", r.stderr);
}

#[test]
fn a_recovery_stuck_pending_times_out_with_what_was_last_seen() {
    let w = world(Behaviour {
        phases: vec![("Setting up primary", None)],
        ..Behaviour::default()
    });
    timeouts(&w, 1800, 1);
    let r = recover(&w, &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("was not healthy within"), "{}", r.stderr);
    assert!(
        r.stderr.contains("last seen: phase \"Setting up primary\""),
        "{}",
        r.stderr
    );
    let status = run(&w, &["status"]);
    assert!(
        status.stdout.contains("[running] recovered"),
        "{}",
        status.stdout
    );
}

#[test]
fn direct_push_waits_for_the_fence() {
    // --push --direct: the push is what Argo CD applies, so it comes after
    // the WAL switch and the fence.
    let w = world(Behaviour::default());
    let r = run(
        &w,
        &[
            "--json",
            "--yes",
            "pg-recover",
            "--target-time",
            TARGET,
            "--push",
            "--direct",
            "--wait",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(steps(&r)[2], "pushed done");
    let commit = r.json()["commit"].as_str().unwrap().to_string();
    let head = common::run_git(&w.bare, &["rev-parse", "main"], "t", "t@example.com");
    assert_eq!(head.trim(), commit);
    assert!(
        w.kube
            .state
            .lock()
            .unwrap()
            .archived
            .iter()
            .all(|k| k.starts_with("cnpg/shared-pg/"))
    );
}
