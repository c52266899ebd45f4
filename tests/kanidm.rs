//! `drgit kanidm-recert`: a real Git repository and remote, real
//! certificates (openssl), a FAKE GitHub and a FAKE Kubernetes API server
//! playing Argo CD, Reloader, the StatefulSet controller and a kanidmd
//! STAND-IN by their documented rules (tests/common/fake_cluster.rs, K1–K3).

mod common;

use common::Fixture;
use common::fake_cluster::{Behaviour, FakeCluster, kanidm_cert_value, kanidmd_line};
use common::fake_github::FakeGitHub;
use common::step_states as steps;

const TOKEN: &str = "ghp_kanidm_test";
const CM: &str = "manifests/kanidm/configmap-repl.yaml";

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
    f.config(&format!(
        "[forge]\napi_url = \"{}\"\nrepo = \"home/home-cluster\"\nmerge_poll_ms = 10\n\n[argocd]\npoll_ms = 10\nsync_timeout_secs = 5\n\n[kanidm]\nrollout_timeout_secs = 3\n",
        gh.url
    ));
    World {
        f,
        gh,
        kube,
        kubeconfig,
    }
}

fn run(w: &World, args: &[&str]) -> common::Run {
    let mut all = vec!["--kubeconfig", w.kubeconfig.as_str()];
    all.extend_from_slice(args);
    w.f.drgit_env(&all, &[("GITHUB_TOKEN", TOKEN)])
}

fn execs(w: &World, what: &str) -> usize {
    w.kube
        .calls()
        .iter()
        .filter(|c| c.starts_with("EXEC") && c.contains(what))
        .count()
}

/// A certificate file as the user would save kanidmd's output.
fn cert_file(f: &Fixture, text: &str) -> String {
    let p = f.dir.path().join("kanidm-1.certificate");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn fixture_cert() -> String {
    std::fs::read_to_string(common::project().join("fixtures/kanidm-1.certificate")).unwrap()
}

#[test]
fn the_dry_run_shows_the_certificate_the_diff_and_the_plan() {
    let f = Fixture::new();
    let before = f.state();
    let file = cert_file(&f, &fixture_cert());
    let run = f.drgit(&[
        "kanidm-recert",
        "--pod",
        "kanidm-1",
        "--certificate",
        &file,
        "--dry-run",
    ]);
    insta::assert_snapshot!(run.screen(&f));
    assert_eq!(f.state(), before, "a dry run changes nothing");
}

#[test]
fn the_certificate_is_read_from_the_pod_and_committed_locally() {
    let w = world(Behaviour::default());
    let r = run(&w, &["--json", "kanidm-recert", "--pod", "kanidm-1"]).ok();
    let out = r.json();
    assert_eq!(out["origin"], "repl://kanidm-1.kanidm:8444");
    assert!(
        out["certificate_from"].as_str().unwrap().contains(
            "kanidmd show-replication-certificate -c /config/server.toml` in pod kanidm/kanidm-1"
        ),
        "{out}"
    );
    assert_eq!(execs(&w, "show-replication-certificate"), 1);
    let branch = out["branch"].as_str().unwrap();
    assert!(branch.starts_with("drgit/kanidm-recert-"), "{branch}");
    // Only the survivor's entry changed, in the committed file.
    let committed = w.f.git(&["show", &format!("{branch}:{CM}")]);
    assert!(committed.contains(&format!("partner_cert = \"{}\"", kanidm_cert_value())));
    assert!(committed.contains("    automatic_refresh = false\n"));
    let diff = w.f.git(&["diff", "--stat", "main", branch]);
    assert!(diff.contains("configmap-repl.yaml | 6 ++++--"), "{diff}");
    // Nothing left this machine.
    assert_eq!(
        w.kube
            .calls()
            .iter()
            .filter(|c| c.contains("PATCH"))
            .count(),
        0
    );
}

#[test]
fn a_garbled_certificate_is_refused_before_anything_changes() {
    let f = Fixture::new();
    let before = f.state();
    let bare = fixture_cert().split('"').nth(1).unwrap().to_string();
    for (text, says) in [
        (
            format!("certificate: \"{}\"", &bare[..bare.len() / 8 * 4]),
            "not a DER X.509 certificate",
        ),
        ("certificate: \"MII+/x\"".to_string(), "standard base64"),
        (
            "Error: unable to connect to the admin socket\n".to_string(),
            "no certificate in",
        ),
    ] {
        let file = cert_file(&f, &text);
        let r = f.drgit(&["kanidm-recert", "--pod", "kanidm-1", "--certificate", &file]);
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(r.stderr.contains(says), "{}", r.stderr);
        assert!(
            r.stderr.contains(&file),
            "names where it was read: {}",
            r.stderr
        );
        assert_eq!(f.state(), before);
    }
    let r = f.drgit(&[
        "kanidm-recert",
        "--pod",
        "kanidm-7",
        "--certificate",
        "nofile",
    ]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("cannot read nofile"), "{}", r.stderr);
    let file = cert_file(&f, &fixture_cert());
    let r = f.drgit(&["kanidm-recert", "--pod", "kanidm-7", "--certificate", &file]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains(CM)
            && r.stderr
                .contains("no replication settings for pod `kanidm-7`"),
        "{}",
        r.stderr
    );
    assert_eq!(f.state(), before);
}

#[test]
fn an_automatic_refresh_drgit_cannot_turn_off_is_refused_naming_the_line() {
    let f = Fixture::new();
    let path = f.repo().join(CM);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("automatic_refresh = true", "automatic_refresh = \"yes\"");
    std::fs::write(&path, &text).unwrap();
    f.git(&["commit", "-qam", "odd value"]);
    let before = f.state();
    let file = cert_file(&f, &fixture_cert());
    let r = f.drgit(&["kanidm-recert", "--pod", "kanidm-1", "--certificate", &file]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let line = text
        .lines()
        .position(|l| l.contains("automatic_refresh"))
        .unwrap()
        + 1;
    assert!(
        r.stderr.contains(&format!("{CM}: `automatic_refresh`"))
            && r.stderr.contains(&format!("(line {line})")),
        "{}",
        r.stderr
    );
    assert_eq!(f.state(), before);
}

#[test]
fn a_certificate_already_in_place_is_a_no_op() {
    let f = Fixture::new();
    let file = cert_file(&f, &fixture_cert());
    let first = f
        .drgit(&[
            "--json",
            "kanidm-recert",
            "--pod",
            "kanidm-1",
            "--certificate",
            &file,
        ])
        .ok()
        .json();
    let before = f.state();
    let again = f
        .drgit(&["kanidm-recert", "--pod", "kanidm-1", "--certificate", &file])
        .ok();
    assert!(
        again
            .stdout
            .contains("Already in place: nothing to change."),
        "{}",
        again.stdout
    );
    assert!(
        again.stdout.contains("refresh-replication-consumer"),
        "{}",
        again.stdout
    );
    assert_eq!(f.state(), before, "no second commit or branch");
    assert!(first["branch"].is_string());
}

#[test]
fn wait_follows_the_pull_request_to_the_refresh() {
    let w = world(Behaviour::default());
    let r = run(
        &w,
        &[
            "--yes",
            "--json",
            "kanidm-recert",
            "--pod",
            "kanidm-1",
            "--pr",
            "--wait",
        ],
    )
    .ok();
    let out = r.json();
    assert_eq!(
        steps(&out["wait"]),
        [
            "merged done",
            "argocd-synced done",
            "restarted done",
            "refresh-consumer done"
        ]
    );
    assert_eq!(out["published"]["pull_request"]["action"], "created");
    let pr = w.gh.state.lock().unwrap().prs[0].clone();
    assert!(pr.body.contains("automatic_refresh = true"), "{}", pr.body);
    // The refresh ran once, with the flag, after every pod had restarted.
    assert_eq!(execs(&w, "refresh-replication-consumer"), 1);
    assert_eq!(execs(&w, "--i-want-to-refresh-this-servers-database"), 1);
    let st = w.kube.state.lock().unwrap();
    assert!(
        st.kanidm.pods.iter().all(|p| p.1 == 2 && p.3),
        "{:?}",
        st.kanidm.pods
    );
    drop(st);
    let calls = w.kube.calls();
    let refresh = calls
        .iter()
        .position(|c| c.contains("refresh-replication-consumer"))
        .unwrap();
    let last_sts = calls
        .iter()
        .rposition(|c| c.contains("statefulsets/kanidm"))
        .unwrap();
    assert!(
        last_sts < refresh,
        "the rollout was judged before the refresh"
    );
}

fn refuses(cmd: &[String]) -> (String, String, i32) {
    match cmd.get(1).map(String::as_str) {
        // kanidmd exits 0 when the refresh fails (K3).
        Some("refresh-replication-consumer") => (
            kanidmd_line("INFO", "Error - you should inspect the logs."),
            String::new(),
            0,
        ),
        _ => common::fake_cluster::default_exec(cmd),
    }
}

#[test]
fn a_refresh_kanidmd_reports_failed_is_an_error_and_resume_retries_only_it() {
    let w = world(Behaviour {
        exec: refuses,
        ..Behaviour::default()
    });
    let r = run(
        &w,
        &[
            "--yes",
            "kanidm-recert",
            "--pod",
            "kanidm-1",
            "--push",
            "--direct",
            "--wait",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("in pod kanidm/kanidm-1 did not succeed: kanidmd said \"Error - you should inspect the logs\"")
            && r.stderr.contains("Its output (the end):"),
        "{}",
        r.stderr
    );
    let status = run(&w, &["--json", "status"]).ok().json();
    assert_eq!(
        steps(&status),
        [
            "merged done",
            "argocd-synced done",
            "restarted done",
            "refresh-consumer running"
        ]
    );
    // The cause fixed, resume goes on with the refresh only.
    w.kube.state.lock().unwrap().behaviour.exec = common::fake_cluster::default_exec;
    let refreshes = execs(&w, "refresh-replication-consumer");
    let pushes_before = w.f.git(&["rev-parse", "origin/main"]);
    let r = run(&w, &["--yes", "--json", "resume"]).ok().json();
    assert_eq!(steps(&r).last().unwrap(), "refresh-consumer done");
    assert_eq!(execs(&w, "refresh-replication-consumer"), refreshes + 1);
    assert_eq!(w.f.git(&["rev-parse", "origin/main"]), pushes_before);
}

#[test]
fn the_refresh_needs_a_confirmation() {
    let w = world(Behaviour::default());
    let r = run(
        &w,
        &[
            "kanidm-recert",
            "--pod",
            "kanidm-1",
            "--push",
            "--direct",
            "--wait",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("not confirmed"), "{}", r.stderr);
    assert_eq!(execs(&w, "refresh-replication-consumer"), 0);
}

#[test]
fn without_reloader_the_wait_stops_naming_the_restart_to_do() {
    let w = world(Behaviour {
        reloader: false,
        ..Behaviour::default()
    });
    let r = run(
        &w,
        &[
            "--yes",
            "kanidm-recert",
            "--pod",
            "kanidm-1",
            "--push",
            "--direct",
            "--wait",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("StatefulSet kanidm/kanidm did not finish its rolling restart")
            && r.stderr.contains("has not started a restart")
            && r.stderr
                .contains("kubectl rollout restart statefulset/kanidm -n kanidm"),
        "{}",
        r.stderr
    );
    assert_eq!(execs(&w, "refresh-replication-consumer"), 0);
}

// ---- kanidm-restore ----

const BACKUP: &str = "kanidm/20261126T030246Z.backup";
const ON_VOLUME: &str = "/data/20261126T030246Z.backup.gz";

fn restore_world(behaviour: Behaviour) -> World {
    let w = world(behaviour);
    w.f.config(&format!(
        "[forge]\napi_url = \"{}\"\nrepo = \"home/home-cluster\"\nmerge_poll_ms = 10\n\n[argocd]\npoll_ms = 10\nsync_timeout_secs = 5\n\n[kanidm]\nrollout_timeout_secs = 5\nrestore_timeout_secs = 2\n",
        w.gh.url
    ));
    w
}

fn pods_left(w: &World) -> Vec<String> {
    w.kube
        .state
        .lock()
        .unwrap()
        .objects
        .keys()
        .filter(|k| k.contains("/pods/"))
        .cloned()
        .collect()
}

const RESTORE_STEPS: [&str; 15] = [
    "scale-down done",
    "scale-down-merged done",
    "scale-down-synced done",
    "pods-gone done",
    "copy done",
    "restore done",
    "scale-up done",
    "scale-up-merged done",
    "scale-up-synced done",
    "healthy done",
    "recert done",
    "recert-merged done",
    "recert-synced done",
    "restarted done",
    "refresh-consumer done",
];

#[test]
fn the_restore_dry_run_shows_the_backup_the_first_change_and_every_step() {
    let f = Fixture::new();
    let before = f.state();
    let run = f.drgit(&["kanidm-restore", "--dry-run"]);
    insta::assert_snapshot!(run.screen(&f));
    assert_eq!(f.state(), before, "a dry run changes nothing");
}

#[test]
fn restore_scales_down_copies_restores_scales_up_and_refreshes_the_other_pod() {
    let w = restore_world(Behaviour::default());
    let r = run(
        &w,
        &["--yes", "--json", "kanidm-restore", "--push", "--direct"],
    )
    .ok();
    let out = r.json();
    assert_eq!(steps(&out["wait"]), RESTORE_STEPS);
    // Three commits on main, in order, each touching its own file.
    let log = w.f.git(&["log", "--format=%s", "-3", "origin/main"]);
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [
            "kanidm: trust the new replication certificate(s) of kanidm-1",
            "kanidm: start kanidm again after the restore of kanidm-0",
            "kanidm: stop kanidm to restore kanidm-0 from kanidm/20261126T030246Z.backup",
        ]
    );
    assert!(
        w.f.git(&["show", "origin/main:manifests/kanidm/statefulset.yaml"])
            .contains("  replicas: 2\n")
    );
    // The backup landed byte for byte, named .gz, and both pods are gone.
    let backup = std::fs::read(w.f.store().join(BACKUP)).unwrap();
    let st = w.kube.state.lock().unwrap();
    assert_eq!(st.volume[ON_VOLUME], backup);
    assert_eq!(st.kanidm.pods.len(), 2);
    drop(st);
    assert!(pods_left(&w).is_empty(), "{:?}", pods_left(&w));
    // The copy ran only once the pods were gone; the refresh once, in kanidm-1.
    let calls = w.kube.calls();
    let copy = calls
        .iter()
        .position(|c| c.starts_with("EXEC< sh -c head -c"))
        .unwrap();
    let restore_pod = calls
        .iter()
        .position(|c| c.starts_with("POST /api/v1/namespaces/kanidm/pods"))
        .unwrap();
    assert!(restore_pod < copy, "the helper pod first");
    assert_eq!(
        w.kube.state.lock().unwrap().copy_saw_pods,
        Some(0),
        "the copy began once every Kanidm pod was gone"
    );
    // The refresh ran once, in the empty pod; certificates were read from both.
    assert_eq!(execs(&w, "refresh-replication-consumer"), 1);
    assert_eq!(
        execs(&w, "--i-want-to-refresh-this-servers-database @kanidm-1"),
        1
    );
    assert!(
        execs(
            &w,
            "show-replication-certificate -c /config/server.toml @kanidm-0"
        ) >= 1
    );
    // The backup copy left the volume once Kanidm ran again.
    assert_eq!(execs(&w, &format!("rm -f {ON_VOLUME} @kanidm-0")), 1);
    // The short-lived pods: the volume of kanidm-0, uid/gid 1000, the server
    // ConfigMap at /config for the restore, the image of the StatefulSet.
    let created = w.kube.state.lock().unwrap().created.clone();
    let pod = |name: &str| {
        created
            .iter()
            .find(|o| o["metadata"]["name"] == name)
            .unwrap()
            .clone()
    };
    for p in [pod("drgit-kanidm-copy"), pod("drgit-kanidm-restore")] {
        assert_eq!(
            p["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "data-kanidm-0"
        );
        assert_eq!(p["spec"]["securityContext"]["runAsUser"], 1000);
        assert_eq!(p["spec"]["securityContext"]["runAsGroup"], 1000);
        assert_eq!(p["spec"]["restartPolicy"], "Never");
    }
    let restore = pod("drgit-kanidm-restore");
    let c = &restore["spec"]["containers"][0];
    assert_eq!(c["image"], "docker.io/kanidm/server:1.9.1");
    assert_eq!(
        c["command"],
        serde_json::json!([
            "kanidmd",
            "database",
            "restore",
            "-c",
            "/config/server.toml",
            ON_VOLUME
        ])
    );
    assert_eq!(
        restore["spec"]["volumes"][1]["configMap"]["name"],
        "kanidm-server-config"
    );
    assert_eq!(c["volumeMounts"][1]["mountPath"], "/config");
    // Nothing downloaded is left on this machine.
    let local = out["backup"]["local"].as_str().unwrap();
    assert!(local.contains(".git/drgit/kanidm-restore/"), "{local}");
    assert!(!std::path::Path::new(local).exists());
    assert!(
        out["left"][0].as_str().unwrap().ends_with("is deleted"),
        "{out}"
    );
}

#[test]
fn restore_goes_through_three_pull_requests() {
    let w = restore_world(Behaviour::default());
    let r = run(&w, &["--yes", "--json", "kanidm-restore", "--pr"]).ok();
    assert_eq!(steps(&r.json()["wait"]), RESTORE_STEPS);
    let prs = w.gh.state.lock().unwrap().prs.clone();
    let titles: Vec<&str> = prs.iter().map(|p| p.title.as_str()).collect();
    assert_eq!(
        titles,
        [
            "kanidm: stop kanidm to restore kanidm-0 from kanidm/20261126T030246Z.backup",
            "kanidm: start kanidm again after the restore of kanidm-0",
            "kanidm: trust the new replication certificate(s) of kanidm-1",
        ]
    );
    assert!(
        prs[0].body.contains("self-heal undoes `kubectl scale`"),
        "{}",
        prs[0].body
    );
}

#[test]
fn a_restore_image_of_another_series_is_refused_before_anything() {
    let w = restore_world(Behaviour::default());
    let before = w.f.state();
    let r = run(
        &w,
        &[
            "--yes",
            "kanidm-restore",
            "--push",
            "--direct",
            "--image",
            "docker.io/kanidm/server:1.8.2",
        ],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "written by kanidmd 1.9, but the restore image is docker.io/kanidm/server:1.8.2"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(w.f.state(), before);
    assert!(w.kube.calls().is_empty(), "{:?}", w.kube.calls());
}

#[test]
fn a_corrupt_backup_is_refused_before_anything() {
    let w = restore_world(Behaviour::default());
    let path = w.f.store().join(BACKUP);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 20);
    std::fs::write(&path, bytes).unwrap();
    let before = w.f.state();
    let r = run(&w, &["--yes", "kanidm-restore", "--push", "--direct"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains(BACKUP) && r.stderr.contains("failed verification"),
        "{}",
        r.stderr
    );
    assert_eq!(w.f.state(), before);
    assert!(w.kube.calls().is_empty(), "{:?}", w.kube.calls());
}

#[test]
fn a_restore_without_success_in_its_log_stops_and_resumes_without_copying_again() {
    let w = restore_world(Behaviour {
        restore_fails: Some("Err(SerdeJsonError)"),
        ..Behaviour::default()
    });
    let r = run(&w, &["--yes", "kanidm-restore", "--push", "--direct"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("kanidmd logged \"Failed to restore database\"")
            && r.stderr.contains(&format!(
                "the backup stays at {ON_VOLUME} on volume data-kanidm-0"
            ))
            && r.stderr.contains("stays at 0 replicas in Git"),
        "{}",
        r.stderr
    );
    assert!(
        pods_left(&w).is_empty(),
        "the restore pod is deleted: {:?}",
        pods_left(&w)
    );
    let status = run(&w, &["--json", "status"]).ok().json();
    assert_eq!(steps(&status)[5], "restore running");
    w.kube.state.lock().unwrap().behaviour.restore_fails = None;
    let r = run(&w, &["--yes", "--json", "resume"]).ok().json();
    assert_eq!(steps(&r), RESTORE_STEPS);
    let copies = w
        .kube
        .calls()
        .iter()
        .filter(|c| c.starts_with("EXEC<"))
        .count();
    assert_eq!(copies, 1, "the copy is not repeated");
}

#[test]
fn a_restore_pod_stuck_pending_times_out_is_deleted_and_resumes() {
    let w = restore_world(Behaviour {
        restore_pending: true,
        ..Behaviour::default()
    });
    let r = run(&w, &["--yes", "kanidm-restore", "--push", "--direct"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("pod kanidm/drgit-kanidm-restore: Pending")
            && r.stderr
                .contains("kubectl describe pod drgit-kanidm-restore"),
        "{}",
        r.stderr
    );
    assert!(pods_left(&w).is_empty(), "{:?}", pods_left(&w));
    w.kube.state.lock().unwrap().behaviour.restore_pending = false;
    let r = run(&w, &["--yes", "--json", "resume"]).ok().json();
    assert_eq!(steps(&r), RESTORE_STEPS);
}

#[test]
fn a_copy_that_arrives_damaged_is_an_error_and_nothing_is_restored() {
    let w = restore_world(Behaviour {
        copy_truncates: true,
        ..Behaviour::default()
    });
    let r = run(&w, &["--yes", "kanidm-restore", "--push", "--direct"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("as downloaded; nothing was restored"),
        "{}",
        r.stderr
    );
    assert!(
        pods_left(&w).is_empty(),
        "the helper pod is deleted: {:?}",
        pods_left(&w)
    );
    assert!(
        !w.kube
            .calls()
            .iter()
            .any(|c| c.contains("drgit-kanidm-restore"))
    );
}

#[test]
fn the_scale_down_needs_a_confirmation() {
    let w = restore_world(Behaviour::default());
    let r = run(&w, &["kanidm-restore", "--push", "--direct"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("not confirmed"), "{}", r.stderr);
    assert_eq!(
        w.f.git(&["rev-parse", "origin/main"]),
        w.f.git(&["rev-parse", "main"]),
        "nothing pushed"
    );
    assert!(
        w.f.git(&["show", "origin/main:manifests/kanidm/statefulset.yaml"])
            .contains("replicas: 2")
    );
}

#[test]
fn a_certificate_made_now_by_openssl_is_read_and_shown() {
    let f = Fixture::new();
    let dir = f.dir.path();
    let der = dir.join("cert.der");
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
        ])
        .arg(dir.join("key.pem"))
        .args([
            "-subj",
            "/O=drgit-test/CN=kanidm-1.kanidm:8444",
            "-days",
            "30",
            "-outform",
            "DER",
            "-out",
        ])
        .arg(&der)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&der).unwrap();
    // URL-safe base64 without padding, as kanidmd prints it.
    let b64 = common::git_http::base64(&bytes)
        .replace('+', "-")
        .replace('/', "_")
        .trim_end_matches('=')
        .to_string();
    let file = cert_file(&f, &format!("certificate: \"{b64}\"\n"));
    let r = f
        .drgit(&[
            "--json",
            "kanidm-recert",
            "--pod",
            "kanidm-1",
            "--certificate",
            &file,
            "--dry-run",
        ])
        .ok()
        .json();
    assert_eq!(
        r["certificate"]["subject"],
        "CN=kanidm-1.kanidm:8444,O=drgit-test"
    );
    assert_eq!(r["certificate"]["value"], b64.as_str());
    assert!(r["diff"].as_str().unwrap().contains(&b64[..40]));
}

#[test]
fn a_plain_json_backup_keeps_a_name_without_gz() {
    let f = Fixture::new();
    let path = f.store().join(BACKUP);
    let mut plain = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap()),
        &mut plain,
    )
    .unwrap();
    assert!(plain.starts_with(b"{\"version\": \"1.9\""));
    std::fs::write(&path, &plain).unwrap();
    let r = f
        .drgit(&["--json", "kanidm-restore", "--dry-run"])
        .ok()
        .json();
    assert_eq!(r["backup"]["gzip"], false);
    assert_eq!(r["backup"]["restore_name"], "20261126T030246Z.backup");
    assert_eq!(r["backup"]["db_ts_max"], "2026-11-26T03:02:46.25Z");
}

#[test]
fn a_pod_that_still_has_its_identity_is_not_restored_over() {
    // kanidm-0 still shows the certificate kanidm-1's settings trust: it
    // did not lose its data.
    let known = std::fs::read_to_string(
        common::project().join("fixtures/home-cluster/manifests/kanidm/configmap-repl.yaml"),
    )
    .unwrap()
    .lines()
    .filter(|l| l.contains("partner_cert = "))
    .nth(1)
    .unwrap()
    .split('"')
    .nth(1)
    .unwrap()
    .to_string();
    let w = restore_world(Behaviour {
        pod_certs: vec![("kanidm-0", known)],
        ..Behaviour::default()
    });
    let r = run(&w, &["--yes", "kanidm-restore", "--push", "--direct"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("pod kanidm/kanidm-0 still has the replication identity Git knows")
            && r.stderr.contains("drgit kanidm-recert --pod"),
        "{}",
        r.stderr
    );
    assert!(
        w.f.git(&["show", "origin/main:manifests/kanidm/statefulset.yaml"])
            .contains("  replicas: 2\n")
    );
    assert!(pods_left(&w).is_empty());
}

#[test]
fn a_refresh_is_refused_when_the_pod_is_not_the_one_certified() {
    // The certificate file is of another server than the pod named.
    let w = world(Behaviour {
        pod_certs: vec![("kanidm-1", "MIIBbogus".into())],
        ..Behaviour::default()
    });
    let file = cert_file(&w.f, &fixture_cert());
    let r = run(
        &w,
        &[
            "--yes",
            "kanidm-recert",
            "--pod",
            "kanidm-1",
            "--certificate",
            &file,
            "--push",
            "--direct",
            "--wait",
        ],
    );
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("kanidm-1"), "{}", r.stderr);
    assert_eq!(execs(&w, "refresh-replication-consumer"), 0);
}
