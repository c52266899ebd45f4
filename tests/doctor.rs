//! `drgit doctor` against the fakes: the fake Kubernetes API server
//! (SelfSubjectAccessReview, Argo CD Applications), the fake GitHub
//! (repository permissions), a real bare Git remote, the bundled backup
//! store, and the talosctl STAND-IN. Each check passes on a ready setup and
//! fails on its own with its fix; no secret reaches the output. The
//! metrics (`--format openmetrics`) are parsed with the Prometheus
//! project's own parser (prometheus_client, Python).

mod common;

use common::fake_cluster::{Behaviour, FakeCluster};
use common::fake_github::FakeGitHub;
use common::{Fixture, Run, project, redact};
use serde_json::{Value, json};

const TOKEN: &str = "ghp_doctorTestToken000000000000000000";
const CP: [&str; 2] = ["192.168.0.230", "192.168.0.231"];

struct World {
    f: Fixture,
    gh: FakeGitHub,
    kube: FakeCluster,
    talos_state: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
}

fn world(behaviour: Behaviour) -> World {
    let f = Fixture::new();
    f.add_remote(None);
    let gh = FakeGitHub::start("home", "home-cluster", TOKEN);
    let kube = FakeCluster::start(f.dir.path().join("srv/home-cluster.git"), behaviour);
    let kubeconfig = kube.kubeconfig(f.dir.path());
    let talos_state = f.dir.path().join("talos.json");
    let nodes: serde_json::Map<String, Value> = CP
        .iter()
        .map(|n| {
            (
                n.to_string(),
                json!({"reachable": true, "etcd": "running", "member": true}),
            )
        })
        .collect();
    std::fs::write(&talos_state, json!({ "nodes": nodes }).to_string()).unwrap();
    f.config(&format!(
        "[expect]\nretention_days = 1\ncatalog_days = 0\n\n[forge]\napi_url = \"{}\"\nrepo = \"home/home-cluster\"\n\n[talos]\ntalosctl = \"{}\"\ncontrol_plane = [\"{}\", \"{}\"]\n",
        gh.url,
        project()
            .join("tests/support/talosctl-standin.py")
            .display(),
        CP[0],
        CP[1]
    ));
    World {
        f,
        gh,
        kube,
        talos_state,
        kubeconfig,
    }
}

impl World {
    fn doctor(&self, extra: &[&str]) -> Run {
        let mut args = vec!["--kubeconfig", self.kubeconfig.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push("doctor");
        self.f.drgit_env(
            &args,
            &[
                ("GITHUB_TOKEN", TOKEN),
                ("TALOSCTL_STANDIN_STATE", self.talos_state.to_str().unwrap()),
            ],
        )
    }

    /// `doctor --format openmetrics`.
    fn doctor_metrics(&self) -> Run {
        self.f.drgit_env(
            &[
                "--kubeconfig",
                self.kubeconfig.to_str().unwrap(),
                "doctor",
                "--format",
                "openmetrics",
            ],
            &[
                ("GITHUB_TOKEN", TOKEN),
                ("TALOSCTL_STANDIN_STATE", self.talos_state.to_str().unwrap()),
            ],
        )
    }

    fn json(&self) -> Value {
        self.doctor(&["--json"]).json()
    }
}

/// The checks that are not ok, as `area/name: status: detail | fix`.
fn not_ok(report: &Value, f: &Fixture) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] != "ok")
        .map(|c| {
            redact(
                &format!(
                    "{}/{}: {}: {} | fix: {}",
                    c["area"].as_str().unwrap(),
                    c["name"].as_str().unwrap(),
                    c["status"].as_str().unwrap(),
                    c["detail"].as_str().unwrap(),
                    c["fix"].as_str().unwrap_or_default()
                ),
                f,
            )
        })
        .collect()
}

#[test]
fn a_ready_setup_passes_every_check() {
    let w = world(Behaviour::default());
    let run = w.doctor(&[]);
    assert_eq!(run.code, 0, "{}", run.screen(&w.f));
    insta::assert_snapshot!(
        run.screen(&w.f)
            .replace(&project().display().to_string(), "[PROJECT]")
    );
    let j = w.json();
    assert_eq!(j["fail"], 0, "{j:#}");
    assert_eq!(j["warn"], 0, "{j:#}");
    // Every access each procedure needs was asked, one review each.
    let reviews = w.kube.state.lock().unwrap().reviews.clone();
    assert!(
        reviews.contains(&"create pods/exec".to_string()),
        "{reviews:?}"
    );
    assert!(
        reviews.contains(&"delete clusters".to_string()),
        "{reviews:?}"
    );
    assert!(
        reviews.contains(&"patch applications".to_string()),
        "{reviews:?}"
    );
    // Nothing was written: the working copy is clean, the remote unchanged.
    assert_eq!(w.f.git(&["status", "--porcelain"]).trim(), "M drgit.toml");
    assert!(
        w.gh.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .all(|r| r.method == "GET"),
        "only reads on GitHub"
    );
}

#[test]
fn a_talos_endpoint_that_is_not_a_control_plane_is_warned_about() {
    // Talos's VIP guide: the VIP goes with etcd, so it must not be the
    // talosconfig's endpoint. A talosconfig of the shape talosctl writes
    // (pkg/machinery/client/config), its keys never read.
    let w = world(Behaviour::default());
    let talosconfig = w.f.dir.path().join("talosconfig");
    std::fs::write(
        &talosconfig,
        format!("context: home\ncontexts:\n  home:\n    endpoints:\n      - 192.168.0.240\n      - {}:50000\n    nodes:\n      - {}\n    ca: Y2E=\n    crt: Y3J0\n    key: a2V5\n", CP[0], CP[0]),
    )
    .unwrap();
    let kept = std::fs::read_to_string(w.f.repo().join("drgit.toml")).unwrap();
    std::fs::write(
        w.f.repo().join("drgit.toml"),
        kept.replace(
            "[talos]\n",
            &format!("[talos]\ntalosconfig = \"{}\"\n", talosconfig.display()),
        ),
    )
    .unwrap();
    let checks = not_ok(&w.json(), &w.f);
    let warned: Vec<&String> = checks
        .iter()
        .filter(|c| c.starts_with("talos/endpoints"))
        .collect();
    assert_eq!(warned.len(), 1, "{checks:#?}");
    assert!(
        warned[0].starts_with("talos/endpoints: warn: 192.168.0.240 (from ")
            && warned[0].contains("context home) not one of `[talos] control_plane`: a VIP")
            && !warned[0].contains("a2V5"),
        "{}",
        warned[0]
    );
    // `[talos] endpoints` set to the control planes: passed as -e, no warning.
    std::fs::write(
        w.f.repo().join("drgit.toml"),
        kept.replace(
            "[talos]\n",
            &format!(
                "[talos]\ntalosconfig = \"{}\"\nendpoints = [\"{}\", \"{}\"]\n",
                talosconfig.display(),
                CP[0],
                CP[1]
            ),
        ),
    )
    .unwrap();
    let checks = not_ok(&w.json(), &w.f);
    assert!(
        !checks.iter().any(|c| c.starts_with("talos/")),
        "{checks:#?}"
    );
    let log = std::fs::read_to_string(w.talos_state.with_extension("json.log")).unwrap();
    assert!(
        log.contains(&format!("\"-e\", \"{},{}\"", CP[0], CP[1])),
        "{log}"
    );
}

#[test]
fn each_check_fails_on_its_own_with_its_fix() {
    // RBAC: exec into pods denied.
    let w = world(Behaviour {
        denied: vec!["create pods/exec"],
        ..Behaviour::default()
    });
    let rbac = not_ok(&w.json(), &w.f);
    drop(w);
    let w = world(Behaviour::default());
    // GitHub: the token may only read.
    w.gh.state.lock().unwrap().can_push = false;
    let github = not_ok(&w.json(), &w.f);
    w.gh.state.lock().unwrap().can_push = true;
    // talosctl: a control plane does not answer.
    let mut st: Value =
        serde_json::from_str(&std::fs::read_to_string(&w.talos_state).unwrap()).unwrap();
    st["nodes"][CP[1]]["reachable"] = json!(false);
    std::fs::write(&w.talos_state, st.to_string()).unwrap();
    let talos = not_ok(&w.json(), &w.f);
    st["nodes"][CP[1]]["reachable"] = json!(true);
    st["nodes"][CP[0]]["tag"] = json!("v1.10.6");
    std::fs::write(&w.talos_state, st.to_string()).unwrap();
    let talos_version = not_ok(&w.json(), &w.f);
    st["nodes"][CP[0]]["tag"] = json!("v1.11.1");
    std::fs::write(&w.talos_state, st.to_string()).unwrap();
    // The Git remote refuses: it does not exist any more.
    std::fs::rename(
        w.f.dir.path().join("srv/home-cluster.git"),
        w.f.dir.path().join("srv/moved.git"),
    )
    .unwrap();
    let git = not_ok(&w.json(), &w.f);
    std::fs::rename(
        w.f.dir.path().join("srv/moved.git"),
        w.f.dir.path().join("srv/home-cluster.git"),
    )
    .unwrap();
    // A manifest path that is not there, and no GitHub credentials.
    let kept = std::fs::read_to_string(w.f.repo().join("drgit.toml")).unwrap();
    std::fs::write(
        w.f.repo().join("drgit.toml"),
        kept.replace(
            "[expect]",
            "[kanidm]\nstatefulset_manifest = \"manifests/kanidm/gone.yaml\"\n\n[expect]",
        ),
    )
    .unwrap();
    let path = not_ok(&w.json(), &w.f);
    std::fs::write(w.f.repo().join("drgit.toml"), &kept).unwrap();
    // The store: the default expectations (a 7-day window) are not met by
    // the fixture's hour of backups.
    std::fs::write(
        w.f.repo().join("drgit.toml"),
        kept.replace("retention_days = 1\ncatalog_days = 0\n", ""),
    )
    .unwrap();
    let store = not_ok(&w.json(), &w.f);
    std::fs::write(w.f.repo().join("drgit.toml"), &kept).unwrap();
    let mut others = Vec::new();

    // talosctl missing, the Argo CD Application named not there, the
    // Cluster named in the config not in its manifest.
    for (case, extra) in [
        (
            "talosctl",
            "[talos]\ntalosctl = \"/nonexistent/talosctl\"\n",
        ),
        ("argocd", "[argocd]\napplication = \"nope\"\n"),
        ("pg plan", "[postgres]\ncluster = \"not-there\"\n"),
    ] {
        let mut cfg = kept.clone();
        if case == "talosctl" {
            cfg = cfg.replace(
                &format!(
                    "talosctl = \"{}\"",
                    project()
                        .join("tests/support/talosctl-standin.py")
                        .display()
                ),
                "talosctl = \"/nonexistent/talosctl\"",
            );
        } else {
            cfg = cfg.replace("[expect]", &format!("{extra}\n[expect]"));
        }
        std::fs::write(w.f.repo().join("drgit.toml"), &cfg).unwrap();
        others.push((case, not_ok(&w.json(), &w.f)));
    }
    std::fs::write(w.f.repo().join("drgit.toml"), &kept).unwrap();
    // The API does not answer.
    let dead = w.f.dir.path().join("dead-kubeconfig");
    std::fs::write(
        &dead,
        std::fs::read_to_string(&w.kubeconfig)
            .unwrap()
            .replace(&w.kube.url, "http://127.0.0.1:9"),
    )
    .unwrap();
    let api = w.f.drgit_env(
        &["--kubeconfig", dead.to_str().unwrap(), "--json", "doctor"],
        &[
            ("GITHUB_TOKEN", TOKEN),
            ("TALOSCTL_STANDIN_STATE", w.talos_state.to_str().unwrap()),
        ],
    );
    others.push(("api", not_ok(&api.json(), &w.f)));

    let mut all = vec![
        ("rbac", rbac),
        ("github", github),
        ("talos", talos),
        ("talos version", talos_version),
        ("git", git),
        ("path", path),
        ("store", store),
    ];
    all.extend(others);
    let mut text = String::new();
    for (case, lines) in &all {
        assert!(!lines.is_empty(), "{case}: a check must say so");
        text.push_str(&format!("## {case}\n{}\n", lines.join("\n")));
    }
    insta::assert_snapshot!(text);
}

#[test]
fn selfheal_off_is_a_warning_and_a_broken_config_a_failed_check() {
    let w = world(Behaviour {
        self_heal: false,
        ..Behaviour::default()
    });
    let run = w.doctor(&["--json"]);
    assert_eq!(run.code, 0, "warnings alone pass: {}", run.stdout);
    let lines = not_ok(&run.json(), &w.f);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("argocd/Argo CD postgres: warn: "),
        "{}",
        lines[0]
    );

    std::fs::write(w.f.repo().join("drgit.toml"), "[backup]\nurll = 1\n").unwrap();
    let run = w.doctor(&["--json"]);
    assert_eq!(run.code, 1);
    let j = run.json();
    assert_eq!(j["fail"], 1);
    assert!(
        j["checks"][0]["detail"].as_str().unwrap().contains("urll"),
        "{j:#}"
    );
}

#[test]
fn no_secret_reaches_the_output() {
    let w = world(Behaviour {
        denied: vec!["get secrets"],
        ..Behaviour::default()
    });
    w.gh.state.lock().unwrap().can_push = false;
    for format in [&[][..], &["--json"][..]] {
        let run = w.doctor(format);
        let out = format!("{}{}", run.stdout, run.stderr);
        for secret in [TOKEN, "fake-kube-token"] {
            assert!(!out.contains(secret), "{secret} in:\n{out}");
        }
    }
    let run = w.doctor_metrics();
    assert!(!run.stdout.contains(TOKEN));
}

/// Parses OpenMetrics text with prometheus_client's parser; returns
/// {family: [[labels, value], …]}.
fn parse_openmetrics(text: &str) -> Value {
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    out[fam.name] = {"type": fam.type, "unit": fam.unit,
                     "samples": [[s.labels, s.value] for s in fam.samples]}
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused it: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn backups_status_and_doctor_as_openmetrics_parse() {
    let w = world(Behaviour::default());
    let run = w.f.drgit(&["backups", "status", "--format", "openmetrics"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let m = parse_openmetrics(&run.stdout);
    let sample = |family: &str, kind: &str| -> f64 {
        m[family]["samples"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s[0]["kind"] == kind)
            .unwrap_or_else(|| panic!("{family}{{kind={kind}}} in {m:#}"))[1]
            .as_f64()
            .unwrap()
    };
    // The fixture at DRGIT_NOW: two base backups, the newer taken at
    // 03:02:32 (57 min 28 s before 04:00), one etcd snapshot at 03:02:46.
    assert_eq!(sample("drgit_backup_count", "postgres"), 2.0);
    assert_eq!(sample("drgit_backup_count", "etcd"), 1.0);
    assert_eq!(sample("drgit_backup_newest_age_seconds", "etcd"), 3434.0);
    assert_eq!(sample("drgit_backup_wal_gaps", "postgres"), 0.0);
    assert_eq!(m["drgit_backup_newest_age_seconds"]["unit"], "seconds");
    let start = sample("drgit_backup_window_start_timestamp_seconds", "postgres");
    let end = sample("drgit_backup_window_end_timestamp_seconds", "postgres");
    assert!(start < end, "{start} {end}");
    assert_eq!(
        m["drgit_backup_status_timestamp_seconds"]["samples"][0][1].as_f64(),
        Some(1_795_665_600.0)
    );

    let run = w.doctor_metrics();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let m = parse_openmetrics(&run.stdout);
    assert_eq!(
        m["drgit_doctor_failed_checks"]["samples"][0][1].as_f64(),
        Some(0.0)
    );
    assert!(m["drgit_doctor_check"]["samples"].as_array().unwrap().len() > 10);
}

#[test]
fn metrics_are_pushed_to_the_pushgateway_before_the_check_fails() {
    // A stand-in Pushgateway: it records the PUT and answers 200, as the
    // real one does for `PUT /metrics/job/<job>` (prometheus/pushgateway
    // README, "PUT method").
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let port = server.server_addr().to_ip().unwrap().port();
    let got = std::thread::spawn(move || {
        let mut req = server.recv().unwrap();
        let mut body = String::new();
        req.as_reader().read_to_string(&mut body).unwrap();
        let seen = (
            req.method().as_str().to_string(),
            req.url().to_string(),
            body,
        );
        req.respond(tiny_http::Response::empty(200)).unwrap();
        seen
    });
    let f = Fixture::new();
    let url = format!("http://127.0.0.1:{port}");
    // The default expectations fail on the fixture: exit 1, metrics pushed.
    let run = f.drgit(&[
        "backups",
        "status",
        "--check",
        "--format",
        "openmetrics",
        "--push-to",
        &url,
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let (method, path, body) = got.join().unwrap();
    assert_eq!(method, "PUT");
    assert_eq!(path, "/metrics/job/drgit-backups");
    assert_eq!(body, run.stdout);
    let m = parse_openmetrics(&body);
    assert!(
        m["drgit_backup_problems"]["samples"][0][1]
            .as_f64()
            .unwrap()
            > 0.0
    );

    let run = f.drgit(&[
        "backups",
        "status",
        "--push-to",
        "https://push.example:9091",
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("only an http:// Pushgateway"),
        "{}",
        run.stderr
    );
}
