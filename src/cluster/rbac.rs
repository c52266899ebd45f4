//! What each procedure asks of the Kubernetes API, as RBAC sees it, and
//! whether the current credentials may (a `SelfSubjectAccessReview` per
//! verb and resource).
//!
//! The table is the one place that lists the calls in `cluster/`: `doctor`
//! checks it against the cluster, and the in-cluster CronJob's Role in
//! `deploy/` is tested against it. A call added to `cluster/` without a
//! line here is a call `doctor` cannot vouch for.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use serde::Serialize;

use super::{ClusterError, Kube};
use crate::config::Config;

/// One verb on one resource, as a Role rule names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Access {
    pub verb: &'static str,
    /// API group: "" for the core group.
    pub group: &'static str,
    /// Plural resource, with its subresource: `pods/exec`.
    pub resource: &'static str,
    pub namespace: String,
    /// Only this object (a Role's `resourceNames`), when the code names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Access {
    /// `get secrets/s3-credentials in database`, as an operator reads it.
    pub fn describe(&self) -> String {
        let group = if self.group.is_empty() {
            String::new()
        } else {
            format!(".{}", self.group)
        };
        let (res, sub) = match self.resource.split_once('/') {
            Some((r, s)) => (r, format!("/{s}")),
            None => (self.resource, String::new()),
        };
        let name = self
            .name
            .as_deref()
            .map(|n| format!(" `{n}`"))
            .unwrap_or_default();
        format!(
            "{} {res}{group}{sub}{name} in namespace {}",
            self.verb, self.namespace
        )
    }

    /// The `kubectl auth can-i` line that asks the same question.
    pub fn can_i(&self) -> String {
        let group = if self.group.is_empty() {
            String::new()
        } else {
            format!(".{}", self.group)
        };
        let (res, sub) = match self.resource.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (self.resource, None),
        };
        let name = self
            .name
            .as_deref()
            .map(|n| format!("/{n}"))
            .unwrap_or_default();
        let sub = sub
            .map(|s| format!(" --subresource={s}"))
            .unwrap_or_default();
        format!(
            "kubectl auth can-i {} {res}{group}{name}{sub} -n {}",
            self.verb, self.namespace
        )
    }
}

/// The procedures that call the API.
pub const PROCEDURES: [&str; 5] = [
    "backups-status",
    "pg-recover",
    "kanidm-recert",
    "kanidm-restore",
    "argocd",
];

/// What `procedure` calls, in the namespaces the config names.
pub fn needs(procedure: &str, cfg: &Config) -> Vec<Access> {
    let pg = cfg.postgres.namespace.clone();
    let kn = cfg.kanidm.namespace.clone();
    let argo = cfg.argocd.namespace.clone();
    let a = |verb, group, resource, ns: &String| Access {
        verb,
        group,
        resource,
        namespace: ns.clone(),
        name: None,
    };
    let mut out = match procedure {
        // Context::open_store: the S3 keys from the cluster's Secret when
        // the environment has none (Kube::secret_value).
        "backups-status" => vec![Access {
            name: Some(cfg.postgres.credentials_secret.clone()),
            ..a("get", "", "secrets", &pg)
        }],
        // pg_wait: cnpg.rs, workload.rs, the psql check over exec. Exec is
        // a WebSocket upgrade of a GET: authorized as `get pods/exec` before
        // Kubernetes 1.35 and as `create` since (kubernetes#78741), so both.
        "pg-recover" => vec![
            a("get", "postgresql.cnpg.io", "clusters", &pg),
            a("patch", "postgresql.cnpg.io", "clusters", &pg),
            a("delete", "postgresql.cnpg.io", "clusters", &pg),
            a("get", "postgresql.cnpg.io", "backups", &pg),
            a("create", "postgresql.cnpg.io", "backups", &pg),
            a("get", "batch", "jobs", &pg),
            a("list", "", "pods", &pg),
            a("list", "", "persistentvolumeclaims", &pg),
            a("get", "", "pods/log", &pg),
            a("get", "", "pods/exec", &pg),
            a("create", "", "pods/exec", &pg),
        ],
        // kanidm_recert: the certificate and the refresh over exec, the
        // rollout (StatefulSet, Reloader's ConfigMap annotation).
        "kanidm-recert" => vec![
            a("get", "", "pods/exec", &kn),
            a("create", "", "pods/exec", &kn),
            a("get", "apps", "statefulsets", &kn),
            a("get", "", "configmaps", &kn),
            a("list", "", "pods", &kn),
        ],
        // kanidm_restore: the copy and restore pods on the data volume.
        "kanidm-restore" => vec![
            a("list", "", "pods", &kn),
            a("get", "", "pods", &kn),
            a("create", "", "pods", &kn),
            a("delete", "", "pods", &kn),
            a("get", "", "pods/log", &kn),
            a("get", "", "pods/exec", &kn),
            a("create", "", "pods/exec", &kn),
            a("get", "apps", "statefulsets", &kn),
            // The restart wait after the recert (kanidm_recert::restart_state).
            a("get", "", "configmaps", &kn),
        ],
        // delivery: find the Application, refresh it, start a sync.
        "argocd" => vec![
            a("get", "argoproj.io", "applications", &argo),
            a("list", "argoproj.io", "applications", &argo),
            a("patch", "argoproj.io", "applications", &argo),
        ],
        _ => Vec::new(),
    };
    out.sort();
    out
}

impl Kube {
    /// Whether the current credentials may do `access` (a
    /// SelfSubjectAccessReview; the reason when the API gives one).
    pub fn may(&self, access: &Access) -> Result<(bool, String), ClusterError> {
        let (resource, subresource) = match access.resource.split_once('/') {
            Some((r, s)) => (r.to_string(), Some(s.to_string())),
            None => (access.resource.to_string(), None),
        };
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(access.verb.to_string()),
                    group: Some(access.group.to_string()),
                    resource: Some(resource),
                    subresource,
                    namespace: Some(access.namespace.clone()),
                    name: access.name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SelfSubjectAccessReview> = Api::all(self.client.clone());
        let pp = PostParams::default();
        let answer = self.call(format!("ask whether it may {}", access.describe()), || {
            api.create(&pp, &review)
        })?;
        Ok(answer
            .status
            .map(|s| (s.allowed, s.reason.unwrap_or_default()))
            .unwrap_or((false, "no status in the answer".into())))
    }

    /// The API server's version (`/version`), to show that it answers.
    pub fn server_version(&self) -> Result<String, ClusterError> {
        let info = self.call("read the API server's version".into(), || {
            self.client.apiserver_version()
        })?;
        Ok(info.git_version)
    }
}
