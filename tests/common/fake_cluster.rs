//! A FAKE Kubernetes API server that plays Argo CD and CloudNativePG for
//! the real kube client: an Argo CD Application that, when asked for a hard
//! refresh, syncs the tracked branch of a real bare Git repository and
//! applies the Cluster's bootstrap from it; a CNPG Cluster that, once
//! deleted, is re-created (as Argo CD would) and walks through recovery
//! phases to healthy, or to CNPG's failure texts. Every request is recorded
//! with the time it came. A stand-in: no API server can run here.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};

pub struct Behaviour {
    /// Argo CD never syncs (a broken Application).
    pub never_sync: bool,
    /// Argo CD syncs but the live Cluster keeps its old spec.
    pub keep_old_spec: bool,
    /// GETs answered 404 after the delete, before the re-creation.
    pub recreate_after: u32,
    /// Phases the re-created Cluster walks through, one per GET.
    pub phases: Vec<(&'static str, Option<&'static str>)>,
    /// The recovery Job fails with this message.
    pub job_fails: Option<&'static str>,
    /// Secret `database/r2-backup-credentials` (credential, password).
    pub secret: Option<(&'static str, &'static str)>,
    /// What `exec` in a pod prints and returns: (stdout, stderr, exit code).
    pub exec: fn(&[String]) -> (String, String, i32),
}

/// A pod's answers: kanidmd's certificate, `false`, or what it was asked.
pub fn default_exec(cmd: &[String]) -> (String, String, i32) {
    match cmd
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["kanidmd", "show-replication-certificate", ..] => (
            "certificate: \"MIIBmjCCAUCgAwIBAgIBATAKBggqhkjOPQQDAjA2\"\n".into(),
            String::new(),
            0,
        ),
        ["false"] => (String::new(), "something went wrong\n".into(), 1),
        other => (
            format!("{}\n", other.join(" ")),
            "note on stderr\n".into(),
            0,
        ),
    }
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            never_sync: false,
            keep_old_spec: false,
            recreate_after: 2,
            phases: vec![
                ("Setting up primary", None),
                ("Waiting for the instances to become active", None),
                ("Cluster in healthy state", None),
            ],
            job_fails: None,
            secret: None,
            exec: default_exec,
        }
    }
}

pub struct State {
    pub behaviour: Behaviour,
    pub requests: Vec<(Instant, String)>,
    pub synced: Option<String>,
    pub recovery_spec: bool,
    pub deleted: bool,
    pub gets_since_delete: u32,
    pub phase_index: usize,
    pub deletes: u32,
    /// Forced answers: (request containing, status) for the next matching request.
    pub faults: Vec<(String, u16)>,
}

pub struct FakeCluster {
    pub url: String,
    pub state: Arc<Mutex<State>>,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const APP: &str = "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications";
const CLUSTER: &str = "/apis/postgresql.cnpg.io/v1/namespaces/database/clusters/shared-pg";

fn application(st: &State) -> Value {
    json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "database", "namespace": "argocd", "resourceVersion": "7"},
        "spec": {"project": "default", "source": {"repoURL": "https://github.example/home/home-cluster.git", "path": "manifests/database", "targetRevision": "main"}},
        "status": {
            "sync": {"status": if st.synced.is_some() { "Synced" } else { "OutOfSync" }, "revision": st.synced.clone().unwrap_or_else(|| "0000000000000000000000000000000000000000".into())},
            "health": {"status": "Healthy"}
        }
    })
}

fn cluster(phase: &str, reason: Option<&str>, recovery: bool, healthy: bool) -> Value {
    let bootstrap = if recovery {
        json!({"recovery": {"source": "shared-pg-backup"}})
    } else {
        json!({"initdb": {"database": "app"}})
    };
    json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": {"name": "shared-pg", "namespace": "database", "resourceVersion": "3"},
        "spec": {"instances": 2, "bootstrap": bootstrap},
        "status": {
            "phase": phase, "phaseReason": reason.unwrap_or(""),
            "readyInstances": if healthy { 2 } else { 0 }, "instances": 2,
            "conditions": [{"type": "Ready", "status": if healthy { "True" } else { "False" }, "message": reason.unwrap_or("")}]
        }
    })
}

impl FakeCluster {
    /// Argo CD tracks `main` of the bare repository `bare`.
    pub fn start(bare: PathBuf, behaviour: Behaviour) -> FakeCluster {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            behaviour,
            requests: Vec::new(),
            synced: None,
            recovery_spec: false,
            deleted: false,
            gets_since_delete: 0,
            phase_index: 0,
            deletes: 0,
            faults: Vec::new(),
        }));
        let (s2, st2) = (server.clone(), state.clone());
        let thread = std::thread::spawn(move || {
            for mut req in s2.incoming_requests() {
                if req
                    .url()
                    .split('?')
                    .next()
                    .unwrap_or_default()
                    .ends_with("/exec")
                {
                    let exec = st2.lock().unwrap().behaviour.exec;
                    serve_exec(req, exec);
                    continue;
                }
                let mut body = String::new();
                let _ = req.as_reader().read_to_string(&mut body);
                let method = req.method().as_str().to_string();
                let path = req.url().split('?').next().unwrap_or_default().to_string();
                let (status, value) = {
                    let mut st = st2.lock().unwrap();
                    let line = format!("{method} {path}");
                    st.requests.push((Instant::now(), line.clone()));
                    match st
                        .faults
                        .iter()
                        .position(|(m, _)| line.contains(m.as_str()))
                    {
                        Some(i) => {
                            let (_, code) = st.faults.remove(i);
                            let reason = if code == 409 {
                                "Conflict"
                            } else {
                                "InternalError"
                            };
                            (
                                code,
                                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": "injected"}),
                            )
                        }
                        None => handle(&mut st, &bare, &method, &path, &body),
                    }
                };
                let mut resp =
                    tiny_http::Response::from_string(value.to_string()).with_status_code(status);
                resp.add_header(
                    tiny_http::Header::from_bytes("Content-Type", "application/json").unwrap(),
                );
                let _ = req.respond(resp);
            }
        });
        FakeCluster {
            url: format!("http://127.0.0.1:{port}"),
            state,
            server,
            thread: Some(thread),
        }
    }

    pub fn kubeconfig(&self, dir: &std::path::Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(&path, format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: fake-kube-token\n",
            self.url
        )).unwrap();
        path
    }

    pub fn calls(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// When the first request matching `what` came.
    pub fn first(&self, what: &str) -> Option<Instant> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .find(|(_, r)| r == what)
            .map(|(t, _)| *t)
    }
}

fn not_found() -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "NotFound", "code": 404, "message": "clusters.postgresql.cnpg.io \"shared-pg\" not found"}),
    )
}

fn handle(
    st: &mut State,
    bare: &std::path::Path,
    method: &str,
    path: &str,
    _body: &str,
) -> (u16, Value) {
    match (method, path) {
        ("GET", APP) => (
            200,
            json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "ApplicationList", "metadata": {"resourceVersion": "7"}, "items": [application(st)]}),
        ),
        ("GET", p) if p == format!("{APP}/database") => (200, application(st)),
        ("PATCH", p) if p == format!("{APP}/database") => {
            // A hard refresh: Argo CD syncs the tracked branch and applies it.
            if !st.behaviour.never_sync {
                let rev = Command::new("git")
                    .args(["--git-dir", bare.to_str().unwrap(), "rev-parse", "main"])
                    .output()
                    .unwrap();
                st.synced = Some(String::from_utf8_lossy(&rev.stdout).trim().to_string());
                let manifest = Command::new("git")
                    .args([
                        "--git-dir",
                        bare.to_str().unwrap(),
                        "show",
                        "main:manifests/database/shared-pg.yaml",
                    ])
                    .output()
                    .unwrap();
                if !st.behaviour.keep_old_spec {
                    st.recovery_spec =
                        String::from_utf8_lossy(&manifest.stdout).contains("    recovery:");
                }
            }
            (200, application(st))
        }
        ("GET", CLUSTER) => {
            if !st.deleted {
                return (
                    200,
                    cluster("Cluster in healthy state", None, st.recovery_spec, true),
                );
            }
            st.gets_since_delete += 1;
            if st.gets_since_delete <= st.behaviour.recreate_after {
                return not_found();
            }
            let i = st.phase_index.min(st.behaviour.phases.len() - 1);
            st.phase_index += 1;
            let (phase, reason) = st.behaviour.phases[i];
            (
                200,
                cluster(
                    phase,
                    reason,
                    st.recovery_spec,
                    phase == "Cluster in healthy state",
                ),
            )
        }
        ("GET", "/apis/batch/v1/namespaces/database/jobs/shared-pg-1-full-recovery") => {
            if !st.deleted || st.gets_since_delete <= st.behaviour.recreate_after {
                return (
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
                );
            }
            let done = st.phase_index >= st.behaviour.phases.len();
            let status = match st.behaviour.job_fails {
                Some(msg) => {
                    json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": msg}]})
                }
                None if done => json!({"succeeded": 1}),
                None => json!({"active": 1}),
            };
            (
                200,
                json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "shared-pg-1-full-recovery", "namespace": "database"}, "spec": {"template": {"spec": {"containers": []}}}, "status": status}),
            )
        }
        ("GET", "/api/v1/namespaces/database/pods") => {
            let items: Vec<Value> = if st.deleted
                && st.gets_since_delete > st.behaviour.recreate_after
            {
                vec![
                    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "shared-pg-1-full-recovery-x7k2p", "namespace": "database", "labels": {"cnpg.io/cluster": "shared-pg"}}, "status": {"phase": if st.phase_index >= st.behaviour.phases.len() { "Succeeded" } else { "Running" }}}),
                ]
            } else {
                vec![]
            };
            (
                200,
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "9"}, "items": items}),
            )
        }
        ("GET", "/api/v1/namespaces/database/secrets/r2-backup-credentials") => {
            match st.behaviour.secret {
                Some((id, secret)) => (
                    200,
                    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "r2-backup-credentials", "namespace": "database"}, "type": "Opaque", "data": {"credential": b64(id), "password": b64(secret)}}),
                ),
                None => (
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
                ),
            }
        }
        ("DELETE", CLUSTER) => {
            if st.deleted {
                return not_found();
            }
            st.deleted = true;
            st.deletes += 1;
            (
                200,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": {"name": "shared-pg", "group": "postgresql.cnpg.io", "kind": "clusters"}}),
            )
        }
        _ => (
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
        ),
    }
}

fn b64(s: &str) -> String {
    super::git_http::base64(s.as_bytes())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Kubernetes exec over a websocket (`v4.channel.k8s.io`): channel 1 is
/// stdout, 2 stderr, 3 the status object.
fn serve_exec(req: tiny_http::Request, exec: fn(&[String]) -> (String, String, i32)) {
    use tungstenite::Message;
    let query = req
        .url()
        .split_once('?')
        .map(|(_, q)| q.to_string())
        .unwrap_or_default();
    let cmd: Vec<String> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("command="))
        .map(percent_decode)
        .collect();
    let key = req
        .headers()
        .iter()
        .find(|h| {
            h.field
                .to_string()
                .eq_ignore_ascii_case("Sec-WebSocket-Key")
        })
        .map(|h| h.value.as_str().to_string())
        .unwrap_or_default();
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut resp = tiny_http::Response::empty(101);
    resp.add_header(
        tiny_http::Header::from_bytes("Sec-WebSocket-Accept", accept.as_bytes()).unwrap(),
    );
    resp.add_header(
        tiny_http::Header::from_bytes("Sec-WebSocket-Protocol", "v4.channel.k8s.io").unwrap(),
    );
    let stream = req.upgrade("websocket", resp);
    let mut ws =
        tungstenite::WebSocket::from_raw_socket(stream, tungstenite::protocol::Role::Server, None);
    let (out, err, code) = exec(&cmd);
    let frame = |ch: u8, data: &[u8]| {
        let mut v = vec![ch];
        v.extend_from_slice(data);
        Message::Binary(v.into())
    };
    let status = if code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({"metadata": {}, "status": "Failure", "message": format!("command terminated with non-zero exit code: error executing command {cmd:?}, exit code {code}"), "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
    };
    if !out.is_empty() {
        let _ = ws.send(frame(1, out.as_bytes()));
    }
    if !err.is_empty() {
        let _ = ws.send(frame(2, err.as_bytes()));
    }
    let _ = ws.send(frame(3, status.to_string().as_bytes()));
    let _ = ws.close(None);
    while ws.read().is_ok() {}
}
