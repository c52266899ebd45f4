//! Workload kinds: Jobs, pods and their logs.
//!
//! A Job has failed only when its `Failed` condition is True: Kubernetes
//! retries a failed pod up to `backoffLimit` (default 6, and CNPG sets none
//! on its recovery Job: pkg/specs/jobs.go), and a retry can succeed. It is
//! done when its `Complete` condition is True. CNPG deletes completed Jobs
//! (internal/controller/cluster_cleanup.go) but keeps failed ones. The
//! texts that say why a recovery cannot finish ("no target backup found",
//! "Expected empty archive", "recovery ended before configured recovery
//! target was reached") are in the Job pod's log, not in any status.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use serde::Serialize;

use super::{ClusterError, Kube};

/// A Job's progress.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct JobState {
    pub name: String,
    pub active: i32,
    pub succeeded: i32,
    /// Failed pods so far (each retried while the Job is not Failed).
    pub failed: i32,
    /// The `Complete` condition is True.
    pub complete: bool,
    /// The `Failed` condition is True: no more retries.
    pub failed_for_good: bool,
    pub failed_message: Option<String>,
    /// The uid of the object that owns it (for CNPG: the Cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_uid: Option<String>,
}

impl Kube {
    /// A Job's state; None while it does not exist.
    pub fn job(&self, namespace: &str, name: &str) -> Result<Option<JobState>, ClusterError> {
        let api: Api<Job> = Api::namespaced(self.client.clone(), namespace);
        let job = self.call(format!("read Job {namespace}/{name}"), || api.get_opt(name))?;
        Ok(job.map(|j| {
            let owner_uid = j
                .metadata
                .owner_references
                .unwrap_or_default()
                .into_iter()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid);
            let st = j.status.unwrap_or_default();
            let conditions = st.conditions.unwrap_or_default();
            let is = |kind: &str| {
                conditions
                    .iter()
                    .find(|c| c.type_ == kind && c.status == "True")
            };
            JobState {
                name: name.to_string(),
                active: st.active.unwrap_or(0),
                succeeded: st.succeeded.unwrap_or(0),
                failed: st.failed.unwrap_or(0),
                complete: is("Complete").is_some(),
                failed_for_good: is("Failed").is_some(),
                failed_message: is("Failed").map(|c| {
                    c.message
                        .clone()
                        .or_else(|| c.reason.clone())
                        .unwrap_or_default()
                }),
                owner_uid,
            }
        }))
    }

    /// The phases of the pods with `label` (e.g. `cnpg.io/cluster=pg`).
    pub fn pod_phases(
        &self,
        namespace: &str,
        label: &str,
    ) -> Result<Vec<(String, String)>, ClusterError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let lp = ListParams::default().labels(label);
        let pods = self.call(format!("list pods {label} in {namespace}"), || {
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

    /// The last `lines` lines of each container's log of the newest pod of
    /// a Job (label `job-name`), each headed by pod and container.
    pub fn job_log_tail(
        &self,
        namespace: &str,
        job: &str,
        lines: i64,
    ) -> Result<String, ClusterError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let lp = ListParams::default().labels(&format!("job-name={job}"));
        let pods = self.call(format!("list pods of Job {namespace}/{job}"), || {
            api.list(&lp)
        })?;
        let Some(pod) = pods
            .items
            .into_iter()
            .max_by_key(|p| p.metadata.creation_timestamp.clone())
        else {
            return Ok(String::new());
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        let containers: Vec<String> = pod
            .spec
            .map(|s| s.containers.into_iter().map(|c| c.name).collect())
            .unwrap_or_default();
        let mut out = String::new();
        for container in containers {
            let lp = LogParams {
                container: Some(container.clone()),
                tail_lines: Some(lines),
                ..LogParams::default()
            };
            let text = self.call(format!("read the log of {namespace}/{name}"), || {
                api.logs(&name, &lp)
            });
            match text {
                Ok(t) if !t.trim().is_empty() => {
                    out.push_str(&format!("--- {name} ({container}):\n{}\n", t.trim_end()));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(%e, "cannot read a recovery log"),
            }
        }
        Ok(out)
    }
}
