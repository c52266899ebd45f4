//! Workload kinds: Jobs, StatefulSets, pods and their logs.
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
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
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

    /// The pods with `label`, as a rollout judges them.
    pub fn pods(&self, namespace: &str, label: &str) -> Result<Vec<PodInfo>, ClusterError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let lp = ListParams::default().labels(label);
        let pods = self.call(format!("list pods {label} in {namespace}"), || {
            api.list(&lp)
        })?;
        Ok(pods
            .items
            .into_iter()
            .map(|p| {
                let st = p.status.unwrap_or_default();
                let conditions = st.conditions.unwrap_or_default();
                PodInfo {
                    name: p.metadata.name.unwrap_or_default(),
                    phase: st.phase.unwrap_or_else(|| "Unknown".into()),
                    ready: conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True"),
                    unschedulable: conditions
                        .iter()
                        .find(|c| {
                            c.type_ == "PodScheduled"
                                && c.status == "False"
                                && c.reason.as_deref() == Some("Unschedulable")
                        })
                        .map(|c| c.message.clone().unwrap_or_default()),
                    started_at: st
                        .start_time
                        .and_then(|t| jiff::Timestamp::from_second(t.0.as_second()).ok()),
                    revision: p
                        .metadata
                        .labels
                        .and_then(|l| l.get("controller-revision-hash").cloned()),
                    deleting: p.metadata.deletion_timestamp.is_some(),
                }
            })
            .collect())
    }

    /// The PersistentVolumeClaims with `label`, each with whether it is
    /// being deleted.
    pub fn pvcs(&self, namespace: &str, label: &str) -> Result<Vec<(String, bool)>, ClusterError> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        let lp = ListParams::default().labels(label);
        let pvcs = self.call(
            format!("list persistentvolumeclaims {label} in {namespace}"),
            || api.list(&lp),
        )?;
        Ok(pvcs
            .items
            .into_iter()
            .map(|p| {
                (
                    p.metadata.name.unwrap_or_default(),
                    p.metadata.deletion_timestamp.is_some(),
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

/// A StatefulSet's rollout, as `kubectl rollout status` judges it.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct StatefulSetState {
    pub name: String,
    /// `spec.replicas` (Kubernetes' default 1).
    pub replicas: i32,
    pub ready: i32,
    pub updated: i32,
    pub generation: i64,
    pub observed_generation: i64,
    pub current_revision: Option<String>,
    pub update_revision: Option<String>,
    /// `spec.selector.matchLabels` as a label selector (`app=kanidm`).
    pub selector: String,
}

/// A pod as a rollout judges it.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct PodInfo {
    pub name: String,
    pub phase: String,
    /// The `Ready` condition is True.
    pub ready: bool,
    /// `status.startTime`: when the kubelet took the pod.
    pub started_at: Option<jiff::Timestamp>,
    /// The StatefulSet revision it runs (label `controller-revision-hash`).
    pub revision: Option<String>,
    /// It has a deletionTimestamp.
    pub deleting: bool,
    /// The scheduler's message while it cannot place the pod (condition
    /// `PodScheduled` False, reason `Unschedulable`: kubernetes
    /// pkg/scheduler/schedule_one.go `handleSchedulingFailure`).
    pub unschedulable: Option<String>,
}

impl StatefulSetState {
    /// Rolled out (kubectl's rule for RollingUpdate, staging/src/k8s.io/
    /// kubectl/pkg/polymorphichelpers/rollout_status.go): the controller has
    /// seen the newest spec, every replica is ready and updated, and the
    /// current revision is the update revision.
    pub fn rolled_out(&self) -> bool {
        self.observed_generation >= self.generation
            && self.ready == self.replicas
            && self.updated == self.replicas
            && self.current_revision == self.update_revision
    }
}

/// A pod's state: its phase and, per container, the exit code once it ended.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct PodState {
    pub name: String,
    pub phase: String,
    pub exit_codes: Vec<(String, i32)>,
}

impl Kube {
    /// A StatefulSet's rollout state; None when it does not exist.
    pub fn statefulset(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<StatefulSetState>, ClusterError> {
        use k8s_openapi::api::apps::v1::StatefulSet;
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), namespace);
        let sts = self.call(format!("read StatefulSet {namespace}/{name}"), || {
            api.get_opt(name)
        })?;
        Ok(sts.map(|s| {
            let st = s.status.unwrap_or_default();
            StatefulSetState {
                name: name.to_string(),
                replicas: s.spec.as_ref().and_then(|sp| sp.replicas).unwrap_or(1),
                ready: st.ready_replicas.unwrap_or(0),
                updated: st.updated_replicas.unwrap_or(0),
                generation: s.metadata.generation.unwrap_or(0),
                observed_generation: st.observed_generation.unwrap_or(0),
                current_revision: st.current_revision,
                update_revision: st.update_revision,
                selector: s
                    .spec
                    .as_ref()
                    .and_then(|sp| sp.selector.match_labels.as_ref())
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default(),
            }
        }))
    }

    /// A ConfigMap's data; None when it does not exist.
    pub fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>, ClusterError> {
        use k8s_openapi::api::core::v1::ConfigMap;
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let cm = self.call(format!("read ConfigMap {namespace}/{name}"), || {
            api.get_opt(name)
        })?;
        Ok(cm.map(|c| c.data.unwrap_or_default()))
    }

    /// Creates a short-lived pod (a helper or a one-off command).
    pub fn create_pod(&self, namespace: &str, pod: &Pod) -> Result<(), ClusterError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let name = pod.metadata.name.clone().unwrap_or_default();
        let pp = kube::api::PostParams::default();
        self.call(format!("create pod {namespace}/{name}"), || {
            api.create(&pp, pod)
        })?;
        Ok(())
    }

    /// A pod's phase and its containers' exit codes; None when it does not exist.
    pub fn pod(&self, namespace: &str, name: &str) -> Result<Option<PodState>, ClusterError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = self.call(format!("read pod {namespace}/{name}"), || api.get_opt(name))?;
        Ok(pod.map(|p| {
            let st = p.status.unwrap_or_default();
            PodState {
                name: name.to_string(),
                phase: st.phase.unwrap_or_else(|| "Unknown".into()),
                exit_codes: st
                    .container_statuses
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|c| {
                        let code = c.state?.terminated?.exit_code;
                        Some((c.name, code))
                    })
                    .collect(),
            }
        }))
    }

    /// Deletes a pod (gone already is fine).
    pub fn delete_pod(&self, namespace: &str, name: &str) -> Result<(), ClusterError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let dp = kube::api::DeleteParams::default();
        match self.call(format!("delete pod {namespace}/{name}"), || {
            api.delete(name, &dp)
        }) {
            Ok(_) => Ok(()),
            Err(ClusterError::Api {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The last `lines` lines of a pod's container log.
    pub fn pod_log(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        lines: Option<i64>,
    ) -> Result<String, ClusterError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let lp = LogParams {
            container: container.map(str::to_string),
            tail_lines: lines,
            ..LogParams::default()
        };
        self.call(format!("read the log of {namespace}/{pod}"), || {
            api.logs(pod, &lp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_is_done_only_when_every_replica_is_on_the_new_revision() {
        let done = StatefulSetState {
            name: "kanidm".into(),
            replicas: 2,
            ready: 2,
            updated: 2,
            generation: 3,
            observed_generation: 3,
            current_revision: Some("kanidm-7d9".into()),
            update_revision: Some("kanidm-7d9".into()),
            selector: "app=kanidm".into(),
        };
        assert!(done.rolled_out());
        let stale = StatefulSetState {
            observed_generation: 2,
            ..done.clone()
        };
        assert!(!stale.rolled_out(), "the controller has not seen the spec");
        let rolling = StatefulSetState {
            updated: 1,
            current_revision: Some("kanidm-5c1".into()),
            ..done.clone()
        };
        assert!(!rolling.rolled_out());
        let scaled_down = StatefulSetState {
            replicas: 0,
            ready: 0,
            updated: 0,
            ..done
        };
        assert!(scaled_down.rolled_out());
    }
}
