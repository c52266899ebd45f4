//! A FAKE Kubernetes API server: loopback HTTP answering the real kube
//! client's GET of a CNPG `Cluster` (postgresql.cnpg.io/v1) with a scripted
//! sequence of states, as CNPG would move a recovering Cluster along, and
//! 404 with a Kubernetes `Status` when it does not exist. A stand-in: no API
//! server can run here.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

pub struct FakeKube {
    pub url: String,
    /// Answers for the next GETs of the Cluster; the last one repeats.
    pub states: Arc<Mutex<VecDeque<Option<Value>>>>,
    pub gets: Arc<Mutex<u32>>,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A CNPG Cluster object as the API returns it.
pub fn cluster(phase: &str, ready: bool, ready_instances: i64, recovery: bool) -> Value {
    let bootstrap = if recovery {
        json!({"recovery": {"source": "shared-pg-backup"}})
    } else {
        json!({"initdb": {"database": "app", "owner": "app"}})
    };
    json!({
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": "shared-pg", "namespace": "database", "resourceVersion": "1", "uid": "00000000-0000-0000-0000-000000000001"},
        "spec": {"instances": 2, "bootstrap": bootstrap},
        "status": {
            "phase": phase,
            "readyInstances": ready_instances,
            "instances": 2,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }, "reason": "ClusterIsReady", "lastTransitionTime": "2026-11-26T04:00:00Z"}]
        }
    })
}

impl FakeKube {
    pub fn start(states: Vec<Option<Value>>) -> FakeKube {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let states = Arc::new(Mutex::new(VecDeque::from(states)));
        let gets = Arc::new(Mutex::new(0));
        let (s2, st2, g2) = (server.clone(), states.clone(), gets.clone());
        let thread = std::thread::spawn(move || {
            for req in s2.incoming_requests() {
                let path = req.url().split('?').next().unwrap_or_default().to_string();
                let (status, body) = if req.method().as_str() == "GET"
                    && path == "/apis/postgresql.cnpg.io/v1/namespaces/database/clusters/shared-pg"
                {
                    *g2.lock().unwrap() += 1;
                    let mut st = st2.lock().unwrap();
                    let current = if st.len() > 1 {
                        st.pop_front().unwrap()
                    } else {
                        st.front().cloned().unwrap()
                    };
                    match current {
                        Some(obj) => (200, obj),
                        None => (
                            404,
                            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "clusters.postgresql.cnpg.io \"shared-pg\" not found", "reason": "NotFound", "details": {"name": "shared-pg", "group": "postgresql.cnpg.io", "kind": "clusters"}, "code": 404}),
                        ),
                    }
                } else {
                    (
                        404,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
                    )
                };
                let mut resp =
                    tiny_http::Response::from_string(body.to_string()).with_status_code(status);
                resp.add_header(
                    tiny_http::Header::from_bytes("Content-Type", "application/json").unwrap(),
                );
                let _ = req.respond(resp);
            }
        });
        FakeKube {
            url: format!("http://127.0.0.1:{port}"),
            states,
            gets,
            server,
            thread: Some(thread),
        }
    }

    /// A kubeconfig pointing at this server.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: fake-kube-token\n",
                self.url
            ),
        )
        .unwrap();
        path
    }

    pub fn gets(&self) -> u32 {
        *self.gets.lock().unwrap()
    }
}
