//! Argo CD through the Kubernetes API alone: Applications
//! (argoproj.io/v1alpha1), a hard refresh, and a sync started the way
//! `kubectl` can start one.
//!
//! The rules this follows are Argo CD's own (argoproj/argo-cd):
//! * `status.sync.revision` is the tracked branch's head at the last
//!   comparison (controller/state.go; multi-source Applications set
//!   `status.sync.revisions[]` instead): once anyone pushes after drgit's
//!   commit it never equals that commit again, so the caller accepts a
//!   revision that contains it.
//! * annotation `argocd.argoproj.io/refresh: hard` asks for a refresh now;
//!   the controller removes it afterwards.
//! * automated sync does not re-apply a resource deleted from the cluster
//!   at a revision it already synced unless `selfHeal` is on
//!   (controller/appcontroller.go `autoSync`: "Skipping auto-sync: most
//!   recent sync already to …"). A sync is started by setting the
//!   Application's `operation` (docs/user-guide/sync-kubectl.md; the
//!   controller picks it up, records `status.operationState` and clears
//!   `operation` when done).

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde::Serialize;
use serde_json::json;

use super::{ClusterError, Kube};

/// One resource a sync is limited to (argo-cd pkg/apis/application/
/// v1alpha1/types.go `SyncOperationResource`).
#[derive(Debug, Clone, Serialize)]
pub struct SyncResource {
    pub group: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

/// What an Argo CD Application says about itself.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AppState {
    pub name: String,
    pub paths: Vec<String>,
    pub sync_status: Option<String>,
    /// `status.sync.revision`, or each of `status.sync.revisions[]`.
    pub revisions: Vec<String>,
    /// `status.sync.revisions[]` alone, one per source in order (a
    /// multi-source Application).
    #[serde(skip)]
    pub source_revisions: Vec<String>,
    pub health: Option<String>,
    /// `spec.syncPolicy.automated` is set.
    pub automated: bool,
    /// `spec.syncPolicy.automated.selfHeal` is true.
    pub self_heal: bool,
    /// An operation (a sync) is set and not finished.
    pub operation_running: bool,
    /// `status.operationState.phase` of the last operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation_phase: Option<String>,
    /// `status.operationState.message` of the last operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation_message: Option<String>,
    /// `spec.syncPolicy.syncOptions` (copied into a sync drgit starts).
    #[serde(skip)]
    pub sync_options: Vec<serde_json::Value>,
    /// `spec.syncPolicy.retry`.
    #[serde(skip)]
    pub retry: Option<serde_json::Value>,
    /// `spec.sources` of a multi-source Application.
    #[serde(skip)]
    pub sources: Option<serde_json::Value>,
}

impl AppState {
    pub fn from_object(o: &DynamicObject) -> AppState {
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
        let mut revisions: Vec<String> = d["status"]["sync"]["revision"]
            .as_str()
            .map(str::to_string)
            .into_iter()
            .collect();
        let source_revisions: Vec<String> = d["status"]["sync"]["revisions"]
            .as_array()
            .map(|revs| {
                revs.iter()
                    .filter_map(|r| r.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        revisions.extend(source_revisions.iter().cloned());
        let automated = &d["spec"]["syncPolicy"]["automated"];
        AppState {
            name: o.metadata.name.clone().unwrap_or_default(),
            paths,
            sync_status: d["status"]["sync"]["status"].as_str().map(str::to_string),
            revisions,
            source_revisions,
            health: d["status"]["health"]["status"].as_str().map(str::to_string),
            automated: automated.is_object(),
            self_heal: automated["selfHeal"] == true,
            operation_running: !d["operation"].is_null(),
            operation_phase: d["status"]["operationState"]["phase"]
                .as_str()
                .map(str::to_string),
            operation_message: d["status"]["operationState"]["message"]
                .as_str()
                .map(str::to_string),
            sync_options: d["spec"]["syncPolicy"]["syncOptions"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            retry: Some(d["spec"]["syncPolicy"]["retry"].clone()).filter(|r| r.is_object()),
            sources: Some(d["spec"]["sources"].clone()).filter(|s| s.is_array()),
        }
    }

    /// The last operation ended without applying (gitops-engine
    /// pkg/sync/common/types.go: `Failed` and `Error` are final, like
    /// `Succeeded`; while Argo CD retries it reports `Running`).
    pub fn operation_failed(&self) -> bool {
        !self.operation_running
            && matches!(self.operation_phase.as_deref(), Some("Failed" | "Error"))
    }

    pub fn synced(&self) -> bool {
        self.sync_status.as_deref() == Some("Synced")
    }

    pub fn describe(&self) -> String {
        format!(
            "{} at {}",
            self.sync_status.as_deref().unwrap_or("unknown"),
            if self.revisions.is_empty() {
                "no revision".to_string()
            } else {
                self.revisions.join(", ")
            }
        )
    }
}

impl Kube {
    fn applications(&self, namespace: &str) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application");
        let ar = ApiResource::from_gvk_with_plural(&gvk, "applications");
        Api::namespaced_with(self.client.clone(), namespace, &ar)
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
        let patch = json!({"metadata": {"annotations": {"argocd.argoproj.io/refresh": "hard"}}});
        self.patch_application(namespace, name, &patch, "refresh")
    }

    /// Starts a sync as `argocd app sync` does (argo-cd v2.13.0 and
    /// v3.5.1, server/application/application.go `Sync`): the operation
    /// carries the Application's `spec.syncPolicy.syncOptions` (the
    /// controller reads the options of the operation only, controller/
    /// sync.go `SyncAppState`, so a sync without them would apply
    /// differently from every other), its `spec.syncPolicy.retry` (else
    /// the limit automated syncs use, 5), the revision drgit verified
    /// (`revisions` with the `sources` for a multi-source Application),
    /// and `resources` when only those should be applied. The last
    /// operation's state is cleared, as Argo CD's SetAppOperation does.
    pub fn sync_application(
        &self,
        namespace: &str,
        app: &AppState,
        revision: &str,
        resources: &[SyncResource],
        reason: &str,
    ) -> Result<(), ClusterError> {
        let patch = sync_operation(app, revision, resources, reason);
        self.patch_application(namespace, &app.name, &patch, "start a sync of")
    }

    fn patch_application(
        &self,
        namespace: &str,
        name: &str,
        patch: &serde_json::Value,
        what: &str,
    ) -> Result<(), ClusterError> {
        let api = self.applications(namespace);
        let pp = kube::api::PatchParams::default();
        let merge = kube::api::Patch::Merge(patch);
        self.call(format!("{what} Application {namespace}/{name}"), || {
            api.patch(name, &pp, &merge)
        })?;
        Ok(())
    }
}

/// The `operation` of [`Kube::sync_application`], and the cleared state.
/// A multi-source Application's sources each have their own revision (a
/// Helm chart's version beside a Git commit): the operation pins each to
/// the one Argo CD compared, `status.sync.revisions[]` in source order,
/// when that list holds the verified revision; otherwise it names none and
/// each source syncs its `targetRevision` (argo-cd v2.13.0 and v3.5.1
/// controller/sync.go: `revisions` index as `sources` do).
fn sync_operation(
    app: &AppState,
    revision: &str,
    resources: &[SyncResource],
    reason: &str,
) -> serde_json::Value {
    let mut sync = json!({"syncStrategy": {"hook": {}}});
    match &app.sources {
        Some(sources) => {
            sync["sources"] = sources.clone();
            let n = sources.as_array().map_or(0, Vec::len);
            if app.source_revisions.len() == n && app.source_revisions.iter().any(|r| r == revision)
            {
                sync["revisions"] = json!(app.source_revisions);
            }
        }
        None => sync["revision"] = json!(revision),
    }
    if !app.sync_options.is_empty() {
        sync["syncOptions"] = json!(app.sync_options);
    }
    if !resources.is_empty() {
        sync["resources"] = json!(resources);
    }
    json!({
        "operation": {
            "initiatedBy": {"username": "drgit"},
            "info": [{"name": "reason", "value": reason}],
            "sync": sync,
            "retry": app.retry.clone().unwrap_or_else(|| json!({"limit": 5})),
        },
        "status": {"operationState": null}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_revisions_and_sync_policy() {
        let o: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "db"},
            "spec": {"sources": [{"path": "a"}, {"path": "b"}], "syncPolicy": {"automated": {"prune": true}}},
            "operation": {"sync": {}},
            "status": {"sync": {"status": "Synced", "revisions": ["r1", "r2"]}}
        }))
        .unwrap();
        let a = AppState::from_object(&o);
        assert_eq!(a.revisions, vec!["r1", "r2"]);
        assert_eq!(a.paths, vec!["a", "b"]);
        assert!(a.synced() && a.automated && !a.self_heal && a.operation_running);
    }

    #[test]
    fn a_multi_source_sync_pins_each_source_to_its_own_revision() {
        let o: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "db"},
            "spec": {"sources": [{"repoURL": "https://charts.example", "chart": "cnpg", "targetRevision": "0.23.0"},
                                 {"repoURL": "https://git.example/home.git", "path": "manifests/database", "targetRevision": "main"}]},
            "status": {"sync": {"status": "Synced", "revisions": ["0.23.0", "c0ffee"]}}
        }))
        .unwrap();
        let a = AppState::from_object(&o);
        let op = sync_operation(&a, "c0ffee", &[], "test");
        assert_eq!(
            op["operation"]["sync"]["revisions"],
            json!(["0.23.0", "c0ffee"])
        );
        assert_eq!(op["operation"]["sync"]["sources"][0]["chart"], "cnpg");
        // A revision Argo CD has not compared: each source's targetRevision.
        let op = sync_operation(&a, "d00d", &[], "test");
        assert!(op["operation"]["sync"]["revisions"].is_null());
        assert!(op["operation"]["sync"]["revision"].is_null());
    }
}
