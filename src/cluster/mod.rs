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
    #[error("CNPG Cluster {namespace}/{name} was not healthy within {waited:?}; last seen: {last}")]
    Timeout {
        namespace: String,
        name: String,
        waited: Duration,
        last: String,
    },
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
        }
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
        let obj = self
            .rt
            .block_on(api.get_opt(name))
            .map_err(|e| ClusterError::Api {
                what: format!("read Cluster {namespace}/{name}"),
                detail: e.to_string(),
            })?;
        Ok(obj.as_ref().map(ClusterState::from_object))
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
