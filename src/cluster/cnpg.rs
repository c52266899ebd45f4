//! CloudNativePG through the Kubernetes API: a Cluster's live state (read
//! through a dynamic object, no generated CRD types), fencing, deletion,
//! and on-demand `Backup` objects.
//!
//! The rules this follows are CNPG's own (cloudnative-pg, main):
//! * a Cluster being deleted keeps its last status: the reconciler returns
//!   early for an object with a deletionTimestamp
//!   (internal/controller/cluster_controller.go), so its phase can still
//!   read "Cluster in healthy state". A re-created Cluster is known by its
//!   new `metadata.uid`.
//! * fencing (`cnpg.io/fencedInstances: '["*"]'`, docs/src/fencing.md)
//!   shuts PostgreSQL down in every instance while the pods stay: nothing
//!   runs `archive_command` any more.
//! * the PostgreSQL container of an instance pod is `postgres`
//!   (pkg/specs/pods.go); `status.currentPrimary` names the primary.
//! * `Backup` (postgresql.cnpg.io/v1): `spec.cluster.name`, `spec.method`
//!   `barmanObjectStore` or `plugin` with `pluginConfiguration.name`;
//!   `status.phase` ends `completed` or `failed` (with `status.error`).
//! * condition `ContinuousArchiving` is True when the last WAL archive call
//!   succeeded (internal/cmd/manager/walarchive).

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde::Serialize;
use serde_json::{Value, json};

use super::{ClusterError, Kube};
use crate::manifest::cnpg::BARMAN_PLUGIN;

/// The annotation that fences instances, and the value for all of them.
pub const FENCED_INSTANCES: &str = "cnpg.io/fencedInstances";
pub const FENCE_ALL: &str = "[\"*\"]";

/// What the live Cluster says about itself.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct ClusterState {
    /// `metadata.uid`: a re-created Cluster has a new one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    pub phase: Option<String>,
    pub ready: bool,
    pub ready_instances: i64,
    pub instances: i64,
    /// The live spec bootstraps with `recovery`.
    pub recovering_spec: bool,
    /// `status.phaseReason` and the Ready condition's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Being deleted (`metadata.deletionTimestamp` is set): its status is
    /// frozen and says nothing about the recovery.
    pub terminating: bool,
    /// Every instance fenced (`cnpg.io/fencedInstances` holds `"*"`).
    pub fenced: bool,
    /// The serverName it archives under now (live spec; default its name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_primary: Option<String>,
    /// The `ContinuousArchiving` condition, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continuous_archiving: Option<bool>,
    /// Backs up through the barman-cloud plugin (else in-tree barman).
    pub plugin_backup: bool,
}

fn condition<'a>(d: &'a Value, kind: &str) -> Option<&'a Value> {
    d["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
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

    /// CNPG's own words for a recovery that cannot finish, when the
    /// Cluster's status carries them.
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
            "phase {:?}, Ready {}, {}/{} instances ready{}",
            self.phase.as_deref().unwrap_or("(none)"),
            self.ready,
            self.ready_instances,
            self.instances,
            if self.terminating {
                " (being deleted: its status is frozen)"
            } else {
                ""
            }
        )
    }

    pub fn from_object(o: &DynamicObject) -> ClusterState {
        let d = &o.data;
        let name = o.metadata.name.clone().unwrap_or_default();
        let plugin = d["spec"]["plugins"].as_array().and_then(|p| {
            p.iter()
                .find(|p| p["name"] == BARMAN_PLUGIN && p["isWALArchiver"] != false)
        });
        let server_name = match plugin {
            Some(p) => p["parameters"]["serverName"].as_str(),
            None => d["spec"]["backup"]["barmanObjectStore"]["serverName"].as_str(),
        }
        .map(str::to_string)
        .or(Some(name));
        let fenced = o
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(FENCED_INSTANCES))
            .and_then(|v| serde_json::from_str::<Vec<String>>(v).ok())
            .is_some_and(|v| v.iter().any(|i| i == "*"));
        ClusterState {
            uid: o.metadata.uid.clone(),
            phase: d["status"]["phase"].as_str().map(str::to_string),
            ready: condition(d, "Ready").is_some_and(|c| c["status"] == "True"),
            ready_instances: d["status"]["readyInstances"].as_i64().unwrap_or(0),
            instances: d["spec"]["instances"].as_i64().unwrap_or(1),
            recovering_spec: d["spec"]["bootstrap"]["recovery"].is_object(),
            reason: [
                d["status"]["phaseReason"].as_str(),
                condition(d, "Ready").and_then(|c| c["message"].as_str()),
            ]
            .into_iter()
            .flatten()
            .find(|s| !s.is_empty())
            .map(str::to_string),
            terminating: o.metadata.deletion_timestamp.is_some(),
            fenced,
            server_name,
            current_primary: d["status"]["currentPrimary"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            continuous_archiving: condition(d, "ContinuousArchiving")
                .map(|c| c["status"] == "True"),
            plugin_backup: plugin.is_some(),
        }
    }
}

/// An on-demand Backup's progress.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BackupState {
    pub name: String,
    /// `pending`, `started`, `running`, `finalizing`, `completed`, `failed`, …
    pub phase: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// barman's backup ID once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    let gvk = GroupVersionKind::gvk("postgresql.cnpg.io", "v1", kind);
    ApiResource::from_gvk_with_plural(&gvk, plural)
}

impl Kube {
    fn cnpg_clusters(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            namespace,
            &resource("Cluster", "clusters"),
        )
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

    /// Creates a Cluster from `object`; returns its uid.
    pub fn create_cnpg_cluster(
        &self,
        namespace: &str,
        object: &Value,
    ) -> Result<String, ClusterError> {
        let obj: DynamicObject =
            serde_json::from_value(object.clone()).map_err(|e| ClusterError::Config {
                path: None,
                source: Box::new(e),
            })?;
        let name = obj.metadata.name.clone().unwrap_or_default();
        let api = self.cnpg_clusters(namespace);
        let pp = kube::api::PostParams::default();
        let created = self.call(format!("create Cluster {namespace}/{name}"), || {
            api.create(&pp, &obj)
        })?;
        Ok(created.metadata.uid.unwrap_or_default())
    }

    /// Fences every instance of the Cluster: PostgreSQL stops, the pods stay.
    pub fn fence_cnpg_cluster(&self, namespace: &str, name: &str) -> Result<(), ClusterError> {
        let patch = json!({"metadata": {"annotations": {FENCED_INSTANCES: FENCE_ALL}}});
        let api = self.cnpg_clusters(namespace);
        let pp = kube::api::PatchParams::default();
        let merge = kube::api::Patch::Merge(&patch);
        self.call(format!("fence Cluster {namespace}/{name}"), || {
            api.patch(name, &pp, &merge)
        })?;
        Ok(())
    }

    /// Deletes a CNPG Cluster with foreground propagation, only if it is
    /// still the one with `uid` (a precondition the API server checks). Its
    /// pods block the deletion until they are gone; its PVCs are owned
    /// without `blockOwnerDeletion` (cloudnative-pg pkg/utils/ownership.go)
    /// and may still terminate once it is gone. Never orphan: CNPG would
    /// adopt the old volumes and skip the recovery.
    pub fn delete_cnpg_cluster(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<(), ClusterError> {
        let mut dp = kube::api::DeleteParams::foreground();
        dp.preconditions = Some(kube::api::Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        });
        let api = self.cnpg_clusters(namespace);
        self.call(format!("delete Cluster {namespace}/{name}"), || {
            api.delete(name, &dp)
        })?;
        Ok(())
    }

    fn cnpg_backups(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            namespace,
            &resource("Backup", "backups"),
        )
    }

    /// Creates an on-demand Backup of `cluster` (unless one of that name
    /// exists), with the method the Cluster archives with.
    pub fn create_backup(
        &self,
        namespace: &str,
        name: &str,
        cluster: &str,
        plugin: bool,
    ) -> Result<(), ClusterError> {
        let api = self.cnpg_backups(namespace);
        if self
            .call(format!("read Backup {namespace}/{name}"), || {
                api.get_opt(name)
            })?
            .is_some()
        {
            return Ok(());
        }
        let mut spec = json!({"cluster": {"name": cluster}});
        if plugin {
            spec["method"] = json!("plugin");
            spec["pluginConfiguration"] = json!({"name": BARMAN_PLUGIN});
        } else {
            spec["method"] = json!("barmanObjectStore");
        }
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Backup",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "drgit"}},
            "spec": spec,
        }))
        .map_err(|e| ClusterError::Api {
            what: format!("build Backup {namespace}/{name}"),
            source: kube::Error::SerdeError(e),
        })?;
        let pp = kube::api::PostParams::default();
        self.call(format!("create Backup {namespace}/{name}"), || {
            api.create(&pp, &obj)
        })?;
        Ok(())
    }

    /// An on-demand Backup's phase, None when it does not exist.
    pub fn backup_state(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BackupState>, ClusterError> {
        let api = self.cnpg_backups(namespace);
        let obj = self.call(format!("read Backup {namespace}/{name}"), || {
            api.get_opt(name)
        })?;
        Ok(obj.map(|o| {
            let st = &o.data["status"];
            let text = |k: &str| st[k].as_str().filter(|s| !s.is_empty()).map(str::to_string);
            BackupState {
                name: name.to_string(),
                phase: text("phase"),
                error: text("error"),
                backup_id: text("backupId"),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(v: Value) -> ClusterState {
        ClusterState::from_object(&serde_json::from_value(v).unwrap())
    }

    #[test]
    fn reads_identity_fence_lineage_and_archiving() {
        let s = state(json!({
            "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
            "metadata": {"name": "pg", "uid": "u-1", "deletionTimestamp": "2026-11-26T04:00:00Z",
                          "annotations": {"cnpg.io/fencedInstances": "[\"*\"]"}},
            "spec": {"instances": 2, "bootstrap": {"recovery": {"source": "x"}},
                     "backup": {"barmanObjectStore": {"serverName": "pg-2"}}},
            "status": {"phase": "Cluster in healthy state", "readyInstances": 2, "currentPrimary": "pg-1",
                       "conditions": [{"type": "Ready", "status": "True"},
                                      {"type": "ContinuousArchiving", "status": "False"}]}
        }));
        assert_eq!(s.uid.as_deref(), Some("u-1"));
        assert!(s.terminating && s.fenced && s.recovering_spec && s.healthy());
        assert_eq!(s.server_name.as_deref(), Some("pg-2"));
        assert_eq!(s.current_primary.as_deref(), Some("pg-1"));
        assert_eq!(s.continuous_archiving, Some(false));
        assert!(!s.plugin_backup);

        let s = state(json!({
            "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
            "metadata": {"name": "pg", "annotations": {"cnpg.io/fencedInstances": "[\"pg-2\"]"}},
            "spec": {"plugins": [{"name": "barman-cloud.cloudnative-pg.io", "isWALArchiver": true,
                                  "parameters": {"barmanObjectName": "r2"}}]}
        }));
        assert!(!s.fenced, "one instance fenced is not the Cluster fenced");
        assert_eq!(
            s.server_name.as_deref(),
            Some("pg"),
            "serverName defaults to the name"
        );
        assert!(s.plugin_backup);
    }
}
