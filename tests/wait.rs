//! `pg-recover --pr --wait`: the whole runbook against a real Git remote, a
//! FAKE GitHub and a FAKE Kubernetes API server playing Argo CD and CNPG:
//! the order of syncs and deletes, the refusals that keep data safe, the
//! journal that lets an interrupted run resume without repeating the delete.

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
    let kube = FakeCluster::start(bare, behaviour);
    let kubeconfig = kube.kubeconfig(f.dir.path()).display().to_string();
    let w = World {
        f,
        gh,
        kube,
        kubeconfig,
    };
    timeouts(&w, 2, 5);
    w
}

/// drgit.toml for the world: fast polls and these timeouts, in seconds.
fn timeouts(w: &World, sync: u64, recovery: u64) {
    w.f.config(&format!(
        "[forge]\napi_url = \"{}\"\nrepo = \"home/home-cluster\"\nmerge_poll_ms = 10\n\n[argocd]\npoll_ms = 10\nsync_timeout_secs = {sync}\n\n[postgres]\nhealth_poll_ms = 10\nrecovery_timeout_secs = {recovery}\n",
        w.gh.url
    ));
}

fn run(w: &World, args: &[&str]) -> common::Run {
    let mut all = vec!["--kubeconfig", w.kubeconfig.as_str()];
    all.extend_from_slice(args);
    w.f.drgit_env(&all, &[("GITHUB_TOKEN", TOKEN)])
}

const CLUSTER: &str = "/apis/postgresql.cnpg.io/v1/namespaces/database/clusters/shared-pg";
const APP: &str = "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/database";

#[test]
fn the_whole_runbook_in_the_right_order() {
    let w = world(Behaviour::default());
    let r = run(
        &w,
        &[
            "--json",
            "--yes",
            "pg-recover",
            "--target-time",
            TARGET,
            "--pr",
            "--auto-revert",
            "--wait",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let steps: Vec<String> = r.json()["wait"]["steps"]
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
        .collect();
    assert_eq!(
        steps,
        vec![
            "merged done",
            "argocd-synced done",
            "delete-cluster done",
            "recovered done",
            "revert-pr done"
        ]
    );

    // Argo CD synced the merge commit before the Cluster was deleted.
    let refresh = w.kube.first(&format!("PATCH {APP}")).expect("refresh");
    let delete = w.kube.first(&format!("DELETE {CLUSTER}")).expect("delete");
    assert!(refresh < delete);
    assert_eq!(w.kube.state.lock().unwrap().deletes, 1);
    let merge = w.gh.prs()[0].merge_sha.clone().expect("merged");
    assert_eq!(
        w.kube.state.lock().unwrap().synced.as_deref(),
        Some(merge.as_str())
    );
    // The revert pull request came only after the Cluster was healthy.
    let prs = w.gh.prs();
    assert_eq!(prs.len(), 2);
    assert_eq!(prs[1].head, "drgit/pg-revert-shared-pg");
    let healthy_seen = w
        .kube
        .state
        .lock()
        .unwrap()
        .requests
        .iter()
        .rfind(|(_, r)| r == &format!("GET {CLUSTER}"))
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
    assert!(
        healthy_seen < revert_opened,
        "healthy first, then the revert"
    );
    let status = run(&w, &["status"]);
    assert!(
        status.stdout.contains("[done   ] revert-pr"),
        "{}",
        status.stdout
    );
}

#[test]
fn no_delete_without_confirmation_then_resume_goes_on() {
    let w = world(Behaviour::default());
    let r = run(
        &w,
        &["pg-recover", "--target-time", TARGET, "--pr", "--wait"],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("not confirmed: Delete the CNPG Cluster database/shared-pg"),
        "{}",
        r.stderr
    );
    assert_eq!(w.kube.state.lock().unwrap().deletes, 0);
    let status = run(&w, &["status"]);
    assert!(
        status.stdout.contains("[done   ] argocd-synced"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("[pending] delete-cluster"),
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
    let r = run(
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
    let r = run(
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
    let r = run(
        &w,
        &[
            "--yes",
            "pg-recover",
            "--target-time",
            TARGET,
            "--pr",
            "--auto-revert",
            "--wait",
        ],
    );
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
/// unblock the world, and resumes.
fn interrupt_and_resume(
    w: &World,
    step: &str,
    ready: impl Fn(&World) -> bool,
    fix: impl Fn(&World),
) {
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
    let r = run(w, &["--yes", "resume"]);
    assert_eq!(r.code, 0, "{step}: {}", r.stderr);
    assert_eq!(
        w.kube.state.lock().unwrap().deletes,
        1,
        "{step}: the delete ran once"
    );
}

#[test]
fn interrupted_at_each_wait_resumes_without_a_second_delete() {
    // Waiting for the merge.
    let w = world(Behaviour::default());
    w.gh.state.lock().unwrap().merge_after_polls = Some(1_000_000);
    interrupt_and_resume(
        &w,
        "merged",
        |w| w.gh.prs().len() == 1,
        |w| w.gh.state.lock().unwrap().prs[0].merge_after_polls = Some(0),
    );
    // Waiting for Argo CD.
    let w = world(Behaviour {
        never_sync: true,
        ..Behaviour::default()
    });
    timeouts(&w, 30, 5);
    interrupt_and_resume(
        &w,
        "argocd-synced",
        |w| w.kube.first(&format!("PATCH {APP}")).is_some(),
        |w| w.kube.state.lock().unwrap().behaviour.never_sync = false,
    );
    // Watching the recovery, after the delete.
    let w = world(Behaviour {
        recreate_after: 1_000_000,
        ..Behaviour::default()
    });
    interrupt_and_resume(
        &w,
        "recovered",
        |w| w.kube.state.lock().unwrap().deletes == 1,
        |w| w.kube.state.lock().unwrap().behaviour.recreate_after = 0,
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
    let r = run(
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
fn a_failed_recovery_job_stops_the_watch() {
    let w = world(Behaviour {
        recreate_after: 0,
        phases: vec![("Setting up primary", None)],
        job_fails: Some("Job has reached the specified backoff limit"),
        ..Behaviour::default()
    });
    let r = run(
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
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(
            "Job shared-pg-1-full-recovery failed: Job has reached the specified backoff limit"
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn a_recovery_stuck_pending_times_out_with_what_was_last_seen() {
    let w = world(Behaviour {
        phases: vec![("Setting up primary", None)],
        ..Behaviour::default()
    });
    timeouts(&w, 1800, 1);
    let r = run(
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
