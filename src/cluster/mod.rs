//! The Kubernetes API: a kube client from kubeconfig (or in-cluster), and
//! the state of a CloudNativePG Cluster read through a dynamic object (no
//! generated CRD types).
//!
//! A blocking facade over the async client, like the forge: the scenarios
//! stay plain sequential code.

use std::path::Path;
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot load the Kubernetes configuration{}: {detail}", path.as_ref().map(|p| format!(" {p}")).unwrap_or_default())]
    Config {
        path: Option<String>,
        detail: String,
    },
    #[error("Kubernetes API: cannot {what}: {detail}")]
    Api { what: String, detail: String },
    #[error(
        "CNPG Cluster {namespace}/{name} does not exist in the cluster; the recovery has not started (or the Cluster is being re-created)"
    )]
    Missing { namespace: String, name: String },
    #[error(
        "CNPG Cluster {namespace}/{name} is unrecoverable: {phase}. The recovery failed; do not revert. Check the `{name}-1-full-recovery` Job's logs, pick another target time, and run pg-recover again"
    )]
    Unrecoverable {
        namespace: String,
        name: String,
        phase: String,
    },
    #[error(
        "CNPG Cluster {namespace}/{name} runs with `bootstrap.initdb`: it was not re-created from the backup yet, so there is no recovery to revert. Merge the recovery, let Argo CD sync it, delete the Cluster, then try again"
    )]
    NotRecovered { namespace: String, name: String },
    #[error(
        "the recovery of CNPG Cluster {namespace}/{name} failed: {text}. Read the `{name}-1-full-recovery` Job's logs; if the target is out of reach, pick a time inside the window (`drgit backups status`) and run pg-recover again"
    )]
    RecoveryFailed {
        namespace: String,
        name: String,
        text: String,
    },
    #[error(
        "no Argo CD Application in namespace {namespace} deploys {path}; set `[argocd] application`"
    )]
    NoApplication { namespace: String, path: String },
    #[error("CNPG Cluster {namespace}/{name} was not healthy within {waited:?}; last seen: {last}")]
    Timeout {
        namespace: String,
        name: String,
        waited: Duration,
        last: String,
    },
}

/// What an Argo CD Application says about itself.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AppState {
    pub name: String,
    pub paths: Vec<String>,
    pub sync_status: Option<String>,
    pub revision: Option<String>,
    pub health: Option<String>,
}

impl AppState {
    fn from_object(o: &DynamicObject) -> AppState {
        let d = &o.data;
        let mut paths: Vec<String> = d["spec"]["source"]["path"]
            .as_str()
            .map(str::to_string)
            .into_iter()
            .collect();
        if let Some(sources) = d["spec"]["sources"].as_array() {
            paths.extend(
                sources
                    .iter()
                    .filter_map(|s| s["path"].as_str().map(str::to_string)),
            );
        }
        AppState {
            name: o.metadata.name.clone().unwrap_or_default(),
            paths,
            sync_status: d["status"]["sync"]["status"].as_str().map(str::to_string),
            revision: d["status"]["sync"]["revision"].as_str().map(str::to_string),
            health: d["status"]["health"]["status"].as_str().map(str::to_string),
        }
    }

    /// Synced at exactly this commit.
    pub fn synced_at(&self, commit: &str) -> bool {
        self.sync_status.as_deref() == Some("Synced") && self.revision.as_deref() == Some(commit)
    }
}

/// What a command run in a pod said.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExecOutput {
    pub stdout: String,
    pub stderr: String,
    /// The API's status channel said Success.
    pub success: bool,
    pub exit_code: Option<i32>,
    /// The status channel's message on failure.
    pub message: String,
}

/// The recovery Job's progress.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobState {
    pub name: String,
    pub active: i32,
    pub succeeded: i32,
    pub failed: i32,
    pub failed_message: Option<String>,
}

/// What the live Cluster says about itself.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClusterState {
    pub phase: Option<String>,
    pub ready: bool,
    pub ready_instances: i64,
    pub instances: i64,
    /// The live spec bootstraps with `recovery`.
    pub recovering_spec: bool,
    /// `status.phaseReason` and the Ready condition's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Being deleted (`metadata.deletionTimestamp` is set).
    pub terminating: bool,
}

fn ready_message(d: &serde_json::Value) -> Option<&str> {
    d["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?["message"]
        .as_str()
}

impl ClusterState {
    /// CNPG's healthy: phase "Cluster in healthy state", Ready condition
    /// True, and every instance of `spec.instances` ready.
    pub fn healthy(&self) -> bool {
        self.phase.as_deref() == Some("Cluster in healthy state")
            && self.ready
            && self.ready_instances == self.instances
    }

    /// PhaseUnrecoverable's text differs by CNPG version ("Cluster is in an
    /// unrecoverable state, needs manual intervention" / "Cluster is
    /// unrecoverable and needs manual intervention"): match on the word.
    pub fn unrecoverable(&self) -> bool {
        self.phase
            .as_deref()
            .is_some_and(|p| p.to_lowercase().contains("unrecoverable"))
    }

    /// CNPG's own words for a recovery that cannot finish.
    pub fn failure(&self) -> Option<String> {
        const TEXTS: [&str; 3] = [
            "no target backup found",
            "recovery ended before configured recovery target was reached",
            "unrecoverable",
        ];
        let mut seen = vec![self.phase.clone().unwrap_or_default()];
        seen.extend(self.reason.clone());
        seen.into_iter().find(|s| {
            let l = s.to_lowercase();
            TEXTS.iter().any(|t| l.contains(t))
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "phase {:?}, Ready {}, {}/{} instances ready",
            self.phase.as_deref().unwrap_or("(none)"),
            self.ready,
            self.ready_instances,
            self.instances
        )
    }

    fn from_object(o: &DynamicObject) -> ClusterState {
        let d = &o.data;
        let ready = d["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .is_some_and(|c| c["status"] == "True");
        ClusterState {
            phase: d["status"]["phase"].as_str().map(str::to_string),
            ready,
            ready_instances: d["status"]["readyInstances"].as_i64().unwrap_or(0),
            instances: d["spec"]["instances"].as_i64().unwrap_or(1),
            recovering_spec: d["spec"]["bootstrap"]["recovery"].is_object(),
            reason: [d["status"]["phaseReason"].as_str(), ready_message(d)]
                .into_iter()
                .flatten()
                .find(|s| !s.is_empty())
                .map(str::to_string),
            terminating: o.metadata.deletion_timestamp.is_some(),
        }
    }
}

fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 409 || s.code == 429,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

pub struct Kube {
    rt: tokio::runtime::Runtime,
    client: kube::Client,
}

impl Kube {
    /// From `kubeconfig` (else `$KUBECONFIG`, `~/.kube/config`, or the
    /// in-cluster service account) and `context` (else the current one).
    pub fn connect(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Kube, ClusterError> {
        crate::init_tls();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClusterError::Config {
                path: None,
                detail: e.to_string(),
            })?;
        let options = KubeConfigOptions {
            context: context.map(str::to_string),
            ..Default::default()
        };
        let err = |detail: String| ClusterError::Config {
            path: kubeconfig.map(|p| p.display().to_string()),
            detail,
        };
        let client = rt.block_on(async {
            let config = match kubeconfig {
                Some(path) => {
                    let kc = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
                    kube::Config::from_custom_kubeconfig(kc, &options)
                        .await
                        .map_err(|e| err(e.to_string()))?
                }
                None if context.is_some() => kube::Config::from_kubeconfig(&options)
                    .await
                    .map_err(|e| err(e.to_string()))?,
                None => kube::Config::infer()
                    .await
                    .map_err(|e| err(e.to_string()))?,
            };
            kube::Client::try_from(config).map_err(|e| err(e.to_string()))
        })?;
        Ok(Kube { rt, client })
    }

    fn cnpg_clusters(&self, namespace: &str) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Cluster");
        let ar = ApiResource::from_gvk_with_plural(&gvk, "clusters");
        Api::namespaced_with(self.client.clone(), namespace, &ar)
    }

    /// The live state of a CNPG Cluster, None when it does not exist.
    pub fn cnpg_cluster(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ClusterState>, ClusterError> {
        let api = self.cnpg_clusters(namespace);
        let obj = self.call(format!("read Cluster {namespace}/{name}"), || {
            api.get_opt(name)
        })?;
        Ok(obj.as_ref().map(ClusterState::from_object))
    }

    fn applications(&self, namespace: &str) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application");
        let ar = ApiResource::from_gvk_with_plural(&gvk, "applications");
        Api::namespaced_with(self.client.clone(), namespace, &ar)
    }

    /// Runs one API call, again after transient failures (connection errors,
    /// 5xx, 409 conflicts, 429), a few times with backoff.
    fn call<T, F, Fut>(&self, what: String, f: F) -> Result<T, ClusterError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.rt.block_on(f()) {
                Ok(v) => return Ok(v),
                Err(e) if attempt < 4 && transient(&e) => {
                    tracing::warn!(%e, what, "Kubernetes API call failed; retrying");
                    std::thread::sleep(Duration::from_millis(100 * 2u64.pow(attempt)));
                }
                Err(e) => return Err(Self::api_err(what)(e)),
            }
        }
    }

    fn api_err(what: String) -> impl FnOnce(kube::Error) -> ClusterError {
        move |e| ClusterError::Api {
            what,
            detail: e.to_string(),
        }
    }

    /// The Argo CD Application that deploys `manifest_dir` (its
    /// `spec.source.path`, or one of `spec.sources[].path`), or the one named.
    pub fn find_application(
        &self,
        namespace: &str,
        name: Option<&str>,
        manifest_dir: &str,
    ) -> Result<AppState, ClusterError> {
        let api = self.applications(namespace);
        if let Some(name) = name {
            let app = self
                .call(format!("read Application {namespace}/{name}"), || {
                    api.get_opt(name)
                })?
                .ok_or_else(|| ClusterError::NoApplication {
                    namespace: namespace.into(),
                    path: manifest_dir.into(),
                })?;
            return Ok(AppState::from_object(&app));
        }
        let lp = kube::api::ListParams::default();
        let list = self.call(format!("list Applications in {namespace}"), || {
            api.list(&lp)
        })?;
        let dir = manifest_dir.trim_end_matches('/');
        list.items
            .iter()
            .map(AppState::from_object)
            .filter(|a| {
                a.paths.iter().any(|p| {
                    dir == p.trim_end_matches('/')
                        || dir.starts_with(&format!("{}/", p.trim_end_matches('/')))
                })
            })
            .max_by_key(|a| a.paths.iter().map(String::len).max().unwrap_or(0))
            .ok_or_else(|| ClusterError::NoApplication {
                namespace: namespace.into(),
                path: manifest_dir.into(),
            })
    }

    pub fn application(&self, namespace: &str, name: &str) -> Result<AppState, ClusterError> {
        self.find_application(namespace, Some(name), "")
    }

    /// Asks Argo CD for a hard refresh (annotation `argocd.argoproj.io/refresh=hard`).
    pub fn refresh_application(&self, namespace: &str, name: &str) -> Result<(), ClusterError> {
        let patch = serde_json::json!({"metadata": {"annotations": {"argocd.argoproj.io/refresh": "hard"}}});
        let api = self.applications(namespace);
        let pp = kube::api::PatchParams::default();
        let merge = kube::api::Patch::Merge(&patch);
        self.call(format!("refresh Application {namespace}/{name}"), || {
            api.patch(name, &pp, &merge)
        })?;
        Ok(())
    }

    /// Deletes a CNPG Cluster with foreground propagation (its pods and, as
    /// CNPG owns them, its PVCs go with it).
    pub fn delete_cnpg_cluster(&self, namespace: &str, name: &str) -> Result<(), ClusterError> {
        let dp = kube::api::DeleteParams::foreground();
        let api = self.cnpg_clusters(namespace);
        self.call(format!("delete Cluster {namespace}/{name}"), || {
            api.delete(name, &dp)
        })?;
        Ok(())
    }

    /// The recovery Job (`<cluster>-1-full-recovery`): active, succeeded,
    /// failed pods and its failure message; None while it does not exist.
    pub fn recovery_job(
        &self,
        namespace: &str,
        cluster: &str,
    ) -> Result<Option<JobState>, ClusterError> {
        use k8s_openapi::api::batch::v1::Job;
        let api: Api<Job> = Api::namespaced(self.client.clone(), namespace);
        let name = format!("{cluster}-1-full-recovery");
        let job = self.call(format!("read Job {namespace}/{name}"), || {
            api.get_opt(&name)
        })?;
        Ok(job.map(|j| {
            let st = j.status.unwrap_or_default();
            let failed_message = st
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Failed" && c.status == "True")
                .map(|c| c.message.unwrap_or(c.reason.unwrap_or_default()));
            JobState {
                name,
                active: st.active.unwrap_or(0),
                succeeded: st.succeeded.unwrap_or(0),
                failed: st.failed.unwrap_or(0),
                failed_message,
            }
        }))
    }

    /// The phases of the Cluster's pods (label `cnpg.io/cluster`).
    pub fn cluster_pods(
        &self,
        namespace: &str,
        cluster: &str,
    ) -> Result<Vec<(String, String)>, ClusterError> {
        use k8s_openapi::api::core::v1::Pod;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let lp = kube::api::ListParams::default().labels(&format!("cnpg.io/cluster={cluster}"));
        let pods = self.call(format!("list pods of {namespace}/{cluster}"), || {
            api.list(&lp)
        })?;
        Ok(pods
            .items
            .into_iter()
            .map(|p| {
                (
                    p.metadata.name.unwrap_or_default(),
                    p.status
                        .and_then(|s| s.phase)
                        .unwrap_or_else(|| "Unknown".into()),
                )
            })
            .collect())
    }

    /// Runs a command in a pod's container and returns its stdout, stderr
    /// and exit status separately (the API's status channel; an exit code
    /// alone is not trusted by callers that know better).
    pub fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        command: &[&str],
    ) -> Result<ExecOutput, ClusterError> {
        use k8s_openapi::api::core::v1::Pod;
        use kube::api::AttachParams;
        use tokio::io::AsyncReadExt;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let mut ap = AttachParams::default()
            .stdin(false)
            .stdout(true)
            .stderr(true);
        if let Some(c) = container {
            ap = ap.container(c);
        }
        let what = format!("exec `{}` in pod {namespace}/{pod}", command.join(" "));
        let cmd: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        self.rt.block_on(async {
            let mut proc = api
                .exec(pod, cmd, &ap)
                .await
                .map_err(Self::api_err(what.clone()))?;
            let mut out = proc.stdout();
            let mut err = proc.stderr();
            let status = proc.take_status();
            let (mut o, mut e) = (Vec::new(), Vec::new());
            let read_out = async {
                if let Some(r) = out.as_mut() {
                    let _ = r.read_to_end(&mut o).await;
                }
            };
            let read_err = async {
                if let Some(r) = err.as_mut() {
                    let _ = r.read_to_end(&mut e).await;
                }
            };
            tokio::join!(read_out, read_err);
            let status = match status {
                Some(s) => s.await,
                None => None,
            };
            let _ = proc.join().await;
            let (ok, exit_code, message) = match &status {
                Some(s) if s.status.as_deref() == Some("Success") => (true, Some(0), String::new()),
                Some(s) => {
                    let code = s
                        .details
                        .as_ref()
                        .and_then(|d| d.causes.as_ref())
                        .and_then(|c| c.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
                        .and_then(|c| c.message.as_deref())
                        .and_then(|m| m.parse().ok());
                    (false, code, s.message.clone().unwrap_or_default())
                }
                None => (false, None, "no status from the API server".into()),
            };
            Ok(ExecOutput {
                stdout: String::from_utf8_lossy(&o).into_owned(),
                stderr: String::from_utf8_lossy(&e).into_owned(),
                success: ok,
                exit_code,
                message,
            })
        })
    }

    /// Reads one key of a Secret. The value is returned to the caller only;
    /// it is never logged or put in an error.
    pub fn secret_value(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<Option<String>, ClusterError> {
        use k8s_openapi::api::core::v1::Secret;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = self.call(format!("read Secret {namespace}/{name}"), || {
            api.get_opt(name)
        })?;
        Ok(secret.and_then(|s| s.data).and_then(|d| {
            d.get(key)
                .map(|v| String::from_utf8_lossy(&v.0).trim().to_string())
        }))
    }

    /// Waits until the recovered Cluster is healthy. Fails at once when it
    /// is unrecoverable, or still bootstraps with initdb (no recovery ran).
    pub fn wait_recovered(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
        poll: Duration,
    ) -> Result<ClusterState, ClusterError> {
        let start = Instant::now();
        let mut delay = poll;
        loop {
            let state = self.cnpg_cluster(namespace, name)?;
            let last = match &state {
                Some(s) if s.unrecoverable() => {
                    return Err(ClusterError::Unrecoverable {
                        namespace: namespace.into(),
                        name: name.into(),
                        phase: s.phase.clone().unwrap_or_default(),
                    });
                }
                Some(s) if !s.recovering_spec => {
                    return Err(ClusterError::NotRecovered {
                        namespace: namespace.into(),
                        name: name.into(),
                    });
                }
                Some(s) if s.healthy() => return Ok(s.clone()),
                Some(s) => s.describe(),
                None => "no Cluster (being re-created?)".into(),
            };
            if start.elapsed() + delay > timeout {
                return Err(ClusterError::Timeout {
                    namespace: namespace.into(),
                    name: name.into(),
                    waited: start.elapsed(),
                    last,
                });
            }
            tracing::info!(elapsed = ?start.elapsed(), state = %last, "waiting for the Cluster to be healthy");
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }
}
