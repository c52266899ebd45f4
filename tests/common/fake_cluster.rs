//! A FAKE Kubernetes API server that plays Argo CD and CloudNativePG for
//! the real kube client, by the rules of the real systems that matter to a
//! recovery (each rule below names its source). A stand-in: no API server
//! can run here. Every request is recorded with the time it came.
//!
//! Argo CD (argoproj/argo-cd):
//! * A1 `status.sync.revision` is the tracked branch's head at the last
//!   comparison (controller/state.go): the fake reads `main` of a real bare
//!   Git repository at every refresh and every read of the Application.
//! * A2 automated sync applies a new revision: it patches the live objects
//!   and creates missing ones (controller/appcontroller.go `autoSync`).
//! * A3 a resource deleted from the cluster comes back at an already-synced
//!   revision only with `selfHeal`, or when a sync is started by setting
//!   `operation` (appcontroller.go: "Skipping auto-sync: most recent sync
//!   already to …"; docs/user-guide/sync-kubectl.md).
//! * A4 a sync started by setting `operation` applies the operation's
//!   `sync.revision` (the head when none) with the operation's own
//!   `syncOptions` (controller/sync.go `SyncAppState` reads only those),
//!   limited to `sync.resources` when given; it ends in
//!   `status.operationState.phase` `Succeeded`, or `Failed`/`Error` with a
//!   message (gitops-engine pkg/sync/common/types.go), after which the
//!   operation is cleared (appcontroller.go `setOperationState`). Without
//!   `spec.syncPolicy.automated` nothing else applies a new revision
//!   (appcontroller.go `autoSync` returns at once); the status still shows
//!   the compared head as `status.sync.revision`, OutOfSync (argo-cd
//!   v2.13.0 and v3.5.1).
//!
//! CloudNativePG (cloudnative-pg):
//! * C1 a running, unfenced primary archives under the live spec's
//!   serverName, read at each WAL file (barman-cloud-wal-archive gets it
//!   per call): once Argo CD applies a new serverName, the next segment
//!   goes there (at archive_timeout; the fake archives at once).
//! * C2 fencing (`cnpg.io/fencedInstances: '["*"]'`, docs/src/fencing.md)
//!   asks the instance manager for a fast shutdown (cloudnative-pg v1.30.0
//!   pkg/management/postgres/instance.go `TryShuttingDownFastImmediate`,
//!   timeout `maxSwitchoverDelay`): for `fence_looks` more looks PostgreSQL
//!   is shutting down: it refuses connections (psql 15: `FATAL:  the
//!   database system is shutting down`) but its archiver still archives
//!   under the live spec (the instance manager refreshes its cache from the
//!   live spec before it looks at the fence, internal/management/
//!   controller/instance_controller.go); the pods stay Ready for the first
//!   half of that (the probe fails three times first); then it is down:
//!   its socket is gone (`No such file or directory`), the pods are not
//!   Ready (the readiness probe is `pg_isready`) and `status.readyInstances`
//!   is 0 (it counts Ready pods, pkg/reconciler/persistentvolumeclaim/
//!   status.go). No phase or condition says fenced. Instance pods carry
//!   `cnpg.io/cluster` and `cnpg.io/podRole=instance` (pkg/specs/pods.go).
//! * C6 `pg_switch_wal()` completes the segment in use; a later one always
//!   has something to complete too (PostgreSQL logs a standby snapshot
//!   after important WAL, bgwriter.c). `pg_snapshot_xmax` is the next
//!   transaction id, which only a transaction that writes takes (checked
//!   here with PostgreSQL 15). A fast shutdown does not archive the
//!   segment in use. Commits may come in while drgit waits for the archive
//!   (`commits_during_archive`).
//! * C3 a Cluster with a deletionTimestamp keeps its last status: the
//!   reconciler returns early for it (internal/controller/
//!   cluster_controller.go); foreground deletion removes it only after its
//!   pods and volumes.
//! * C4 the recovery Job has no backoffLimit of CNPG's own (Kubernetes'
//!   default 6): failed pods are retried and the Job is Failed only when
//!   its `Failed` condition is True; CNPG's reason ("Expected empty
//!   archive" from barman-cloud-check-wal-archive when the new lineage
//!   holds objects) is in the pod's log only. A completed Job is deleted by
//!   CNPG (internal/controller/cluster_cleanup.go).
//! * C5 an on-demand Backup goes pending → running → completed, and
//!   `ContinuousArchiving` is True once WAL archiving works. One CNPG
//!   refuses stays in phase `invalid backup definition` with the reason
//!   in `status.error` (cloudnative-pg v1.30.0 api/v1/backup_types.go
//!   `BackupPhaseDefinitionInvalid`, `SetAdmissionError`).
//! * C7 a Cluster's PVCs (`<cluster>-N`, labelled `cnpg.io/cluster`) are
//!   owned without `blockOwnerDeletion` (cloudnative-pg v1.25.0 and
//!   v1.30.0 pkg/utils/ownership.go `SetAsOwnedBy`), so a foreground
//!   delete removes the Cluster while they still terminate: they outlive
//!   it by `pvc_looks` PVC lists. A Cluster re-created meanwhile gets a
//!   first instance whose pod uses the terminating PVC of the same name
//!   (pkg/specs/jobs.go `CreatePrimaryJob`, `ClaimName: podName`; only
//!   v1.30.0 waits for it, #11017; before, `createIfNotExists` swallows the
//!   AlreadyExists): the pod stays Pending with PodScheduled False, reason
//!   Unschedulable and the scheduler's words (kubernetes v1.33
//!   volumebinding `podHasPVCs`: `persistentvolumeclaim "X" is being
//!   deleted`, wrapped by FitError). An unscheduled pod does not hold the
//!   PVC (the PVC protection controller counts only pods with a node), so
//!   it goes, and the words become `persistentvolumeclaim "X" not found`;
//!   nothing creates it again, and the Cluster never gets past "Setting up
//!   primary".
//! * D1 a Cluster created through the API (a drill's throwaway one)
//!   recovers as CNPG's does: "Setting up primary", then "Cluster in
//!   healthy state" with its instances ready and Ready True; one whose
//!   recovery cannot finish keeps "Setting up primary" with PostgreSQL's
//!   words as its phase reason (cloudnative-pg api/v1 cluster_types.go).
//!   Its primary's psql answers `select count(*) from pg_class`.
//! * D2 CNPG's validating webhook refuses a created Cluster whose
//!   `maxSyncReplicas` is not below `instances`, whose
//!   `postgresql.synchronous.number` is not below the instances plus
//!   standby names, or whose replica source is not an external cluster
//!   (cloudnative-pg v1.30.0 internal/webhook/v1/cluster_webhook.go).
//!
//! Kanidm (namespace `kanidm`, Application `kanidm` deploying
//! `manifests/kanidm`):
//! * K1 Reloader (stakater/Reloader README): when a ConfigMap named in the
//!   StatefulSet's `configmap.reloader.stakater.com/reload` annotation
//!   changes, it updates the pod template (an env var holding the data's
//!   hash), which gives the StatefulSet a new update revision.
//! * K2 a StatefulSet's RollingUpdate (kubernetes.io docs, StatefulSet
//!   "Rolling Updates"; pkg/controller/statefulset): pods are replaced one
//!   at a time from the highest ordinal down, the next only once the
//!   previous is Running and Ready; each pod carries its revision in the
//!   label `controller-revision-hash`; `currentRevision` becomes the update
//!   revision once every pod runs it.
//! * K3 kanidmd is a stand-in (the real one cannot run here): `exec`
//!   answers with kanidmd's documented output (server/daemon/src/main.rs,
//!   logged by tracing-forest to stdout): `show-replication-certificate`
//!   logs `certificate: "…"`; `refresh-replication-consumer` logs
//!   `success`, `Error - you should inspect the logs.`, or without
//!   `--i-want-to-refresh-this-servers-database` `Unwilling to proceed.
//!   Check --help.`, and exits 0 in every case.
//! * K4 the stand-in's `kanidmd database restore -c CONFIG FILE` in a pod
//!   (server/core/src/lib.rs `restore_server_core`): the file must be on
//!   the volume (else `File::open error reading …`, exit 0); gzip is
//!   decided by the `.gz` name alone (proto/src/backup.rs), so gzip data
//!   under another name fails to parse; success logs `✅ Restore
//!   Success!`. The StatefulSet's `spec.replicas` comes from Git (A2) and
//!   pods go and come one ordinal at a time (K2).
//! * K5 the Kanidm drill pod: its init container `receive` takes the copy
//!   over exec (a running init container can be exec'd into), `restore`
//!   runs K4, `check` prints `kanidmd domain show` (server/daemon/src/
//!   main.rs, DomainSettingsCmds::Show: name, UUID, level); the pod
//!   Succeeds when the restore succeeded (restartPolicy Never).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};

pub struct Behaviour {
    /// Argo CD never syncs (a broken Application).
    pub never_sync: bool,
    /// Argo CD syncs but the live Cluster keeps its old spec.
    pub keep_old_spec: bool,
    /// Argo CD applies the recovery but the live Cluster keeps its old
    /// serverName (an ignoreDifferences or a mutating webhook on the field).
    pub keep_old_server_name: bool,
    /// After this many reports of Synced, the Application shows OutOfSync
    /// at the same revision (someone changed a live object: drift).
    pub drift_after_synced: Option<u32>,
    /// `spec.syncPolicy.automated.selfHeal` of the Application (A3).
    pub self_heal: bool,
    /// `spec.syncPolicy.automated` is set at all (A4).
    pub automated: bool,
    /// `spec.syncPolicy.syncOptions` of the Application (A4).
    pub sync_options: Vec<&'static str>,
    /// Syncs started by hand that end in `Error` before one succeeds (A4).
    pub sync_errors: u32,
    /// Argo CD reports Synced at the revision it synced last even though
    /// `main` moved on (a cached comparison: the revision says which).
    pub stale_revision: bool,
    /// Someone pushes an unrelated commit to `main` right after the
    /// recovery commit lands there (A1: the revision moves on).
    pub push_after_merge: bool,
    /// GETs a deleted Cluster stays, terminating with its last status (C3).
    pub terminating_gets: u32,
    /// Phases the re-created Cluster walks through, one per GET.
    pub phases: Vec<(&'static str, Option<&'static str>)>,
    /// Looks (GETs of the Cluster, pod lists, psql) PostgreSQL keeps
    /// running after the fence annotation (C2).
    pub fence_looks: u32,
    /// Polls of `pg_stat_archiver` that see a new commit come in (C6).
    pub commits_during_archive: u32,
    /// C1: a running primary archives into a new lineage as soon as Argo
    /// CD applies it; false: not before the delete (archive_timeout).
    pub archive_at_once: bool,
    /// PVC lists the deleted Cluster's volumes outlive it by (C7).
    pub pvc_looks: u32,
    /// The deleted Cluster's first PVC stays, not being deleted (orphaned).
    pub orphan_pvc: bool,
    /// Failed pods of the recovery Job before it succeeds (C4).
    pub job_retries: u32,
    /// The recovery Job fails for good, its pod logging this (C4).
    pub job_fails: Option<&'static str>,
    /// The on-demand Backup fails with this error (C5).
    pub backup_fails: Option<&'static str>,
    /// The on-demand Backup is refused as an invalid definition (C5).
    pub backup_invalid: Option<&'static str>,
    /// Secret `database/r2-backup-credentials` (credential, password).
    pub secret: Option<(&'static str, &'static str)>,
    /// What `exec` of anything but psql prints: (stdout, stderr, exit code).
    pub exec: fn(&[String]) -> (String, String, i32),
    /// Reloader runs in the cluster (K1).
    pub reloader: bool,
    /// A copy onto the volume loses half its bytes (a broken stream).
    pub copy_truncates: bool,
    /// The restore pod never leaves Pending (an unschedulable pod).
    pub restore_pending: bool,
    /// kanidmd's restore fails with this (K4).
    pub restore_fails: Option<&'static str>,
    /// The certificate `show-replication-certificate` shows in a pod,
    /// where it differs from the fixture's new one (K3).
    pub pod_certs: Vec<(&'static str, String)>,
    /// Accesses the SelfSubjectAccessReview denies: `verb resource` as
    /// `kubectl auth can-i` names them (`create pods/exec`, `get secrets`).
    pub denied: Vec<&'static str>,
    /// A Cluster created through the API (a drill's) never gets healthy:
    /// its status carries this text (D1).
    pub drill_fails: Option<&'static str>,
}

/// A line as kanidmd's tracing-forest logger prints it (K3).
pub fn kanidmd_line(level: &str, text: &str) -> String {
    let icon = if level == "ERROR" {
        "🚨 [error]"
    } else {
        "ｉ [info]"
    };
    format!("00000000-0000-0000-0000-000000000000 {level:<8} {icon}: {text}\n")
}

/// The certificate the fake kanidm-1 shows: a real one (tests/../fixtures).
pub fn kanidm_cert_value() -> String {
    let text =
        std::fs::read_to_string(super::project().join("fixtures/kanidm-1.certificate")).unwrap();
    text.split('"').nth(1).unwrap().to_string()
}

/// A pod's answers: kanidmd (K3), `false`, or what it was asked.
pub fn default_exec(cmd: &[String]) -> (String, String, i32) {
    match cmd
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["kanidmd", "show-replication-certificate", ..] => (
            kanidmd_line("INFO", "Running show replication certificate ...")
                + &kanidmd_line(
                    "INFO",
                    &format!(" | certificate: \"{}\"", kanidm_cert_value()),
                ),
            String::new(),
            0,
        ),
        ["kanidmd", "refresh-replication-consumer", rest @ ..] => {
            if rest.contains(&"--i-want-to-refresh-this-servers-database") {
                (kanidmd_line("INFO", "success"), String::new(), 0)
            } else {
                (
                    kanidmd_line("ERROR", "Unwilling to proceed. Check --help."),
                    String::new(),
                    0,
                )
            }
        }
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
            automated: true,
            sync_options: Vec::new(),
            sync_errors: 0,
            keep_old_spec: false,
            keep_old_server_name: false,
            drift_after_synced: None,
            self_heal: true,
            stale_revision: false,
            push_after_merge: false,
            terminating_gets: 2,
            phases: vec![
                ("Setting up primary", None),
                ("Waiting for the instances to become active", None),
                ("Cluster in healthy state", None),
            ],
            fence_looks: 2,
            commits_during_archive: 0,
            archive_at_once: true,
            pvc_looks: 0,
            orphan_pvc: false,
            job_retries: 0,
            job_fails: None,
            backup_fails: None,
            backup_invalid: None,
            secret: None,
            exec: default_exec,
            reloader: true,
            copy_truncates: false,
            restore_pending: false,
            restore_fails: None,
            pod_certs: Vec::new(),
            denied: Vec::new(),
            drill_fails: None,
        }
    }
}

/// The live CNPG Cluster.
#[derive(Debug, Clone)]
pub struct Live {
    pub uid: String,
    pub recovery: bool,
    pub server_name: String,
    pub fenced: bool,
    /// PostgreSQL is down in every instance (C2).
    pub down: bool,
    /// The instance pods are not Ready (C2).
    pub unready: bool,
    /// Looks left before a fenced Cluster's PostgreSQL is down (C2).
    pub fence_left: Option<u32>,
    /// Set by the delete: GETs left before it is gone (C3).
    pub terminating: Option<u32>,
    /// Created by Argo CD after a delete (it recovers), or the original.
    pub recreated: bool,
    /// The new lineage held objects when it bootstrapped (C4).
    pub archive_not_empty: bool,
    pub phase_index: usize,
    /// Its first instance's pod waits on the old Cluster's PVC (C7).
    pub stuck_on_pvc: bool,
    /// Its last status, frozen once it is being deleted (C3).
    pub status: Value,
    pub job_polls: u32,
    pub job_cleaned: bool,
}

pub struct State {
    pub behaviour: Behaviour,
    pub requests: Vec<(Instant, String)>,
    /// The revision Argo CD synced last (A1).
    pub synced: Option<String>,
    pub cluster: Option<Live>,
    pub uids: u32,
    pub deletes: u32,
    /// `propagationPolicy` of each delete of the Cluster.
    pub delete_policies: Vec<String>,
    pub fences: u32,
    pub syncs_started: u32,
    /// Times the `database` Application was reported Synced with the
    /// recovery applied.
    pub synced_reports: u32,
    /// Every `operation` set on the Application, as sent (A4).
    pub operations: Vec<Value>,
    /// `status.operationState` of the last operation (A4).
    pub operation_state: Option<Value>,
    pub pushed_after: bool,
    /// Objects the fake primary archived: store keys.
    pub archived: Vec<String>,
    /// Every SelfSubjectAccessReview asked: `verb resource[/sub]`.
    pub reviews: Vec<String>,
    pub last_archived_wal: Option<String>,
    /// The deleted Cluster's PVCs: PVC lists left before they are gone (C7).
    pub old_pvcs: Option<u32>,
    /// The next transaction id (C6).
    pub next_xid: u64,
    pub backups: Vec<(String, u32)>,
    /// Forced answers: (request containing, status) for the next matching request.
    pub faults: Vec<(String, u16)>,
    /// Scripted answers to GETs of the Cluster instead of the simulation
    /// (None: 404), one per GET, the last repeated.
    pub script: std::collections::VecDeque<Option<Value>>,
    pub cluster_gets: u32,
    /// Other objects by API path (StatefulSets, ConfigMaps, pods): GET,
    /// POST to their collection, DELETE. A pod created here runs once
    /// (Pending, then Succeeded with exit code 0, as the kubelet reports a
    /// finished container: `state.terminated.exitCode`).
    pub objects: std::collections::BTreeMap<String, Value>,
    /// Pod logs by pod name.
    pub logs: std::collections::BTreeMap<String, String>,
    pub kanidm: Kanidm,
    /// Files written onto volumes through exec, by path.
    pub volume: std::collections::BTreeMap<String, Vec<u8>>,
    /// The Kanidm StatefulSet's pods when the copy onto the volume began.
    pub copy_saw_pods: Option<usize>,
    /// Every object created (POST bodies), in order.
    pub created: Vec<Value>,
}

/// The Kanidm StatefulSet and what Argo CD applied of `manifests/kanidm`.
#[derive(Debug, Clone, Default)]
pub struct Kanidm {
    /// The revision the `kanidm` Application synced last (A1).
    pub synced: Option<String>,
    /// `configmap-repl.yaml` as applied.
    pub configmap: String,
    pub replicas: usize,
    pub generation: i64,
    /// The update revision's number (K1, K2).
    pub revision: u32,
    /// (pod, revision, started, ready), by ordinal.
    pub pods: Vec<(String, u32, String, bool)>,
}

impl Kanidm {
    fn revision_name(n: u32) -> String {
        format!("kanidm-{:010x}", 0x5c0ffee0u64 + n as u64)
    }

    /// One step of the rollout or scaling per look (K2; scaling down
    /// removes the highest ordinal first, scaling up creates the next
    /// ordinal once the previous is Ready: OrderedReady).
    fn roll(&mut self) {
        if self.pods.len() > self.replicas {
            self.pods.pop();
            return;
        }
        if let Some(p) = self.pods.iter_mut().find(|p| p.1 == self.revision && !p.3) {
            p.3 = true; // the new pod became Ready
            return;
        }
        if self.pods.len() < self.replicas {
            let name = format!("kanidm-{}", self.pods.len());
            self.pods.push((
                name,
                self.revision,
                jiff::Timestamp::now().to_string(),
                false,
            ));
            return;
        }
        if let Some(p) = self.pods.iter_mut().rev().find(|p| p.1 != self.revision) {
            p.1 = self.revision;
            p.2 = jiff::Timestamp::now().to_string();
            p.3 = false;
        }
    }

    fn statefulset(&self) -> Value {
        let updated = self.pods.iter().filter(|p| p.1 == self.revision).count();
        let ready = self.pods.iter().filter(|p| p.3).count();
        let current = if updated == self.pods.len() && ready == self.pods.len() {
            self.revision
        } else {
            self.pods.iter().map(|p| p.1).min().unwrap_or(self.revision)
        };
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "kanidm", "namespace": "kanidm", "generation": self.generation},
            "spec": {"replicas": self.replicas, "serviceName": "kanidm", "selector": {"matchLabels": {"app": "kanidm"}},
                     "template": {"metadata": {"labels": {"app": "kanidm"}}, "spec": {"containers": [{"name": "kanidm", "image": "docker.io/kanidm/server:1.9.1"}]}}},
            "status": {"replicas": self.pods.len(), "readyReplicas": ready, "updatedReplicas": updated,
                       "currentReplicas": self.pods.iter().filter(|p| p.1 == current).count(),
                       "observedGeneration": self.generation,
                       "currentRevision": Self::revision_name(current), "updateRevision": Self::revision_name(self.revision)}})
    }

    fn pod_list(&self) -> Value {
        let items: Vec<Value> = self.pods.iter().map(|(name, rev, started, ready)| json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "kanidm", "labels": {"app": "kanidm", "controller-revision-hash": Self::revision_name(*rev)}},
            "spec": {"containers": [{"name": "kanidm"}]},
            "status": {"phase": "Running", "startTime": started,
                       "conditions": [{"type": "Ready", "status": if *ready { "True" } else { "False" }}]}
        })).collect();
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "11"}, "items": items})
    }

    /// The ConfigMap's data: each `key: |` block of the applied manifest,
    /// its indentation removed (the fixture's layout).
    fn configmap_data(&self) -> Value {
        let mut data = serde_json::Map::new();
        let mut current: Option<(String, String)> = None;
        for line in self
            .configmap
            .split_once("\ndata:\n")
            .map_or("", |(_, d)| d)
            .lines()
        {
            if let Some(key) = line.strip_prefix("  ").filter(|l| !l.starts_with(' ')) {
                if let Some((k, v)) = current.take() {
                    data.insert(k, json!(v));
                }
                current = Some((
                    key.split(':').next().unwrap_or_default().to_string(),
                    String::new(),
                ));
            } else if let Some((_, v)) = current.as_mut() {
                v.push_str(line.strip_prefix("    ").unwrap_or(line.trim_start()));
                v.push('\n');
            }
        }
        if let Some((k, v)) = current {
            data.insert(k, json!(v));
        }
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kanidm-repl", "namespace": "kanidm"}, "data": data})
    }
}

impl State {
    pub fn recovery_spec(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| c.recovery)
    }
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
const BACKUPS: &str = "/apis/postgresql.cnpg.io/v1/namespaces/database/backups";
const JOB: &str = "shared-pg-1-full-recovery";
const MANIFEST: &str = "manifests/database/shared-pg.yaml";
const KANIDM_APP: &str = "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/kanidm";
const KANIDM_CM: &str = "manifests/kanidm/configmap-repl.yaml";
const KANIDM_STS: &str = "manifests/kanidm/statefulset.yaml";

struct World {
    bare: PathBuf,
    store: Option<PathBuf>,
}

fn application(st: &State, head: Option<&str>) -> Value {
    let in_sync = st.synced.is_some()
        && (st.behaviour.stale_revision || st.synced.as_deref() == head)
        && st.cluster.as_ref().is_some_and(|c| c.terminating.is_none());
    let mut policy = json!({});
    if st.behaviour.automated {
        policy["automated"] = json!({"prune": true, "selfHeal": st.behaviour.self_heal});
    }
    if !st.behaviour.sync_options.is_empty() {
        policy["syncOptions"] = json!(st.behaviour.sync_options);
    }
    // A4: without automated sync the compared head shows, OutOfSync.
    let revision = if st.behaviour.automated {
        st.synced.clone()
    } else {
        head.map(str::to_string).or_else(|| st.synced.clone())
    };
    let mut status = json!({
        "sync": {"status": if in_sync { "Synced" } else { "OutOfSync" }, "revision": revision.unwrap_or_else(|| "0000000000000000000000000000000000000000".into())},
        "health": {"status": "Healthy"}
    });
    if let Some(op) = &st.operation_state {
        status["operationState"] = op.clone();
    }
    json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "database", "namespace": "argocd", "resourceVersion": "7"},
        "spec": {"project": "default",
                 "source": {"repoURL": "https://github.example/home/home-cluster.git", "path": "manifests/database", "targetRevision": "main"},
                 "syncPolicy": policy},
        "status": status
    })
}

fn kanidm_application(st: &State, head: Option<&str>) -> Value {
    let in_sync = st.kanidm.synced.is_some() && st.kanidm.synced.as_deref() == head;
    json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "kanidm", "namespace": "argocd", "resourceVersion": "8"},
        "spec": {"project": "default",
                 "source": {"repoURL": "https://github.example/home/home-cluster.git", "path": "manifests/kanidm", "targetRevision": "main"},
                 "syncPolicy": {"automated": {"prune": true, "selfHeal": true}}},
        "status": {
            "sync": {"status": if in_sync { "Synced" } else { "OutOfSync" }, "revision": st.kanidm.synced.clone().unwrap_or_else(|| "0000000000000000000000000000000000000000".into())},
            "health": {"status": "Healthy"}
        }
    })
}

fn status(phase: &str, reason: Option<&str>, healthy: bool, archiving: bool) -> Value {
    json!({
        "phase": phase, "phaseReason": reason.unwrap_or(""),
        "readyInstances": if healthy { 2 } else { 0 }, "instances": 2,
        "currentPrimary": "shared-pg-1",
        "conditions": [
            {"type": "Ready", "status": if healthy { "True" } else { "False" }, "message": reason.unwrap_or("")},
            {"type": "ContinuousArchiving", "status": if archiving { "True" } else { "False" }}
        ]
    })
}

/// D2: CNPG's validating webhook on a created Cluster, the rules a
/// copy of production's spec can break (cloudnative-pg v1.30.0
/// internal/webhook/v1/cluster_webhook.go; the same in v1.25.0
/// api/v1/cluster_webhook.go).
fn cnpg_webhook(spec: &Value) -> Option<String> {
    let instances = spec["instances"].as_i64().unwrap_or(1);
    if let Some(max) = spec["maxSyncReplicas"].as_i64()
        && max >= instances
    {
        return Some(format!(
            "spec.maxSyncReplicas: Invalid value: {max}: maxSyncReplicas must be lower than the number of instances"
        ));
    }
    if let Some(n) = spec["postgresql"]["synchronous"]["number"].as_i64() {
        let names = ["standbyNamesPre", "standbyNamesPost"]
            .iter()
            .map(|k| {
                spec["postgresql"]["synchronous"][k]
                    .as_array()
                    .map_or(0, Vec::len) as i64
            })
            .sum::<i64>();
        if n >= instances + names {
            return Some(format!(
                "spec.postgresql.synchronous: Invalid value: {n}: Invalid synchronous configuration: the number of synchronous replicas must be less than the total number of instances and the provided standby names."
            ));
        }
    }
    if spec["replica"]["enabled"] == true
        && let Some(source) = spec["replica"]["source"].as_str()
        && !spec["externalClusters"]
            .as_array()
            .is_some_and(|e| e.iter().any(|c| c["name"] == source))
    {
        return Some(format!(
            "spec.replica.source: Invalid value: \"{source}\": External cluster {source} not found"
        ));
    }
    None
}

fn cluster_json(c: &Live) -> Value {
    let bootstrap = if c.recovery {
        json!({"recovery": {"source": "shared-pg-backup"}})
    } else {
        json!({"initdb": {"database": "app"}})
    };
    let mut meta =
        json!({"name": "shared-pg", "namespace": "database", "resourceVersion": "3", "uid": c.uid});
    if c.fenced {
        meta["annotations"] = json!({"cnpg.io/fencedInstances": "[\"*\"]"});
    }
    if c.terminating.is_some() {
        meta["deletionTimestamp"] = json!("2026-11-26T04:00:00Z");
        meta["finalizers"] = json!(["foregroundDeletion"]);
    }
    json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": meta,
        "spec": {"instances": 2, "bootstrap": bootstrap,
                 "backup": {"barmanObjectStore": {"destinationPath": "s3://home-cluster-backup/cnpg/", "serverName": c.server_name}}},
        "status": c.status
    })
}

use super::bare_git as git;

/// What the manifest at `rev` says: (bootstrap is recovery, serverName of
/// the Cluster's own backups). Read from the fixture's layout: the backup's
/// `serverName` is the one before `externalClusters:`.
fn manifest_at(bare: &Path, rev: &str) -> (bool, String) {
    let text = git(bare, &["show", &format!("{rev}:{MANIFEST}")]).unwrap_or_default();
    let own = text.split("externalClusters:").next().unwrap_or_default();
    let server = own
        .lines()
        .find_map(|l| l.strip_prefix("      serverName: "))
        .unwrap_or("shared-pg")
        .trim()
        .to_string();
    (text.contains("    recovery:"), server)
}

/// Another person's commit on `main`, touching another file.
fn push_unrelated(bare: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("w");
    let run = |args: &[&str], cwd: &Path| {
        let out = Command::new("git")
            .args(args)
            .current_dir(cwd)
            .env("GIT_AUTHOR_NAME", "Someone")
            .env("GIT_AUTHOR_EMAIL", "someone@example.com")
            .env("GIT_COMMITTER_NAME", "Someone")
            .env("GIT_COMMITTER_EMAIL", "someone@example.com")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        &["clone", "-q", bare.to_str().unwrap(), dir.to_str().unwrap()],
        tmp.path(),
    );
    std::fs::write(dir.join("NOTES.md"), "unrelated change during the outage\n").unwrap();
    run(&["add", "NOTES.md"], &dir);
    run(&["commit", "-qm", "unrelated"], &dir);
    run(&["push", "-q", "origin", "HEAD:main"], &dir);
}

impl World {
    /// The primary archives one WAL segment under `lineage` (C1); returns
    /// its name. Real (synthetic) WAL, so that drgit can read it back.
    fn archive(&self, st: &mut State, lineage: &str) -> Option<String> {
        let store = self.store.as_ref()?;
        let dir = store.join(format!("cnpg/{lineage}/wals/0000000100000000"));
        std::fs::create_dir_all(&dir).unwrap();
        let next = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                let n = e.unwrap().file_name().to_string_lossy().into_owned();
                (n.len() == 27).then(|| u64::from_str_radix(&n[16..24], 16).ok())?
            })
            .max()
            .map_or(1, |m| m + 1);
        let name = format!("0000000100000000{next:08X}");
        let commit: jiff::Timestamp = "2026-11-26T03:59:00Z".parse().unwrap();
        std::fs::write(
            dir.join(format!("{name}.gz")),
            super::walgen::segment_gz(&name, &[commit]),
        )
        .unwrap();
        st.archived
            .push(format!("cnpg/{lineage}/wals/0000000100000000/{name}.gz"));
        st.last_archived_wal = Some(name.clone());
        Some(name)
    }

    fn lineage_empty(&self, lineage: &str) -> bool {
        let Some(store) = &self.store else {
            return true;
        };
        let dir = store.join(format!("cnpg/{lineage}"));
        !dir.exists() || walk_count(&dir) == 0
    }

    fn new_cluster(&self, st: &mut State, recovery: bool, server_name: String, recreated: bool) {
        st.uids += 1;
        // C7: the old volumes still terminate; the pending pod then holds them.
        let stuck_on_pvc = recreated && st.old_pvcs.is_some_and(|n| n > 0);
        let archive_not_empty = recovery && recreated && !self.lineage_empty(&server_name);
        st.cluster = Some(Live {
            uid: format!("00000000-0000-0000-0000-{:012}", st.uids),
            recovery,
            server_name,
            fenced: false,
            down: false,
            unready: false,
            fence_left: None,
            terminating: None,
            recreated,
            archive_not_empty,
            stuck_on_pvc,
            phase_index: 0,
            status: status("Cluster in healthy state", None, true, true),
            job_polls: 0,
            job_cleaned: false,
        });
    }

    /// Argo CD compares and, being automated, syncs (A1, A2, A3).
    fn reconcile(&self, st: &mut State) {
        if st.behaviour.never_sync {
            return;
        }
        let Some(mut head) = git(&self.bare, &["rev-parse", "main"]) else {
            return;
        };
        let (recovery, server) = manifest_at(&self.bare, &head);
        if recovery && st.behaviour.push_after_merge && !st.pushed_after {
            push_unrelated(&self.bare);
            st.pushed_after = true;
            head = git(&self.bare, &["rev-parse", "main"]).unwrap_or(head);
        }
        let new_revision = st.synced.as_deref() != Some(head.as_str());
        let missing = st.cluster.is_none();
        if !st.behaviour.automated {
            return; // A4: only an operation applies
        }
        if new_revision {
            self.apply(st, head, recovery, server);
        } else if missing && st.behaviour.self_heal {
            self.new_cluster(st, recovery, server, true);
        }
    }

    /// Argo CD applies the manifest at `rev` (A2, A4).
    fn apply(&self, st: &mut State, rev: String, recovery: bool, server: String) {
        st.synced = Some(rev);
        match st.cluster.as_mut() {
            Some(c) if c.terminating.is_none() => {
                if !st.behaviour.keep_old_spec {
                    let lineage_changed = c.server_name != server;
                    c.recovery = recovery;
                    if !st.behaviour.keep_old_server_name {
                        c.server_name = server.clone();
                    }
                    // C1: the running primary's next segment goes to the new lineage.
                    if lineage_changed
                        && !c.down
                        && st.behaviour.archive_at_once
                        && !st.behaviour.keep_old_server_name
                    {
                        self.archive(st, &server);
                    }
                }
            }
            Some(_) => {} // applying to an object being deleted changes nothing
            None => self.new_cluster(st, recovery, server, true),
        }
    }

    /// Argo CD syncs `manifests/kanidm` (A1, A2); a changed ConfigMap
    /// makes Reloader start a rollout (K1).
    fn reconcile_kanidm(&self, st: &mut State) {
        if st.behaviour.never_sync {
            return;
        }
        let Some(head) = git(&self.bare, &["rev-parse", "main"]) else {
            return;
        };
        if st.kanidm.synced.as_deref() == Some(head.as_str()) {
            return;
        }
        st.kanidm.synced = Some(head.clone());
        let sts = git(&self.bare, &["show", &format!("{head}:{KANIDM_STS}")]).unwrap_or_default();
        if let Some(n) = sts
            .lines()
            .find_map(|l| l.strip_prefix("  replicas: "))
            .and_then(|n| n.split_whitespace().next()?.parse::<usize>().ok())
            && n != st.kanidm.replicas
        {
            st.kanidm.replicas = n;
            st.kanidm.generation += 1;
        }
        let cm = git(&self.bare, &["show", &format!("{head}:{KANIDM_CM}")]).unwrap_or_default();
        if cm != st.kanidm.configmap {
            st.kanidm.configmap = cm;
            if st.behaviour.reloader {
                st.kanidm.revision += 1;
                st.kanidm.generation += 1;
            }
        }
    }

    /// One GET of the Cluster: a terminating one counts down (C3), a
    /// re-created one walks its phases.
    fn get_cluster(&self, st: &mut State) -> Option<Value> {
        tick_fence(st);
        let c = st.cluster.as_mut()?;
        if let Some(left) = c.terminating.as_mut() {
            if *left == 0 {
                st.cluster = None;
                return None;
            }
            *left -= 1;
            return Some(cluster_json(c));
        }
        if c.recreated {
            let phases = &st.behaviour.phases;
            let failing = c.archive_not_empty || st.behaviour.job_fails.is_some() || c.stuck_on_pvc;
            let i = c.phase_index.min(phases.len() - 1);
            let (phase, reason) = if failing { phases[0] } else { phases[i] };
            c.phase_index += 1;
            let healthy = !failing && phase == "Cluster in healthy state";
            c.status = status(phase, reason, healthy, healthy);
        }
        Some(cluster_json(c))
    }

    /// The recovery Job of a re-created Cluster (C4).
    fn job(&self, st: &mut State) -> Option<Value> {
        let b = &st.behaviour;
        let c = st.cluster.as_mut()?;
        if !c.recreated || !c.recovery || c.terminating.is_some() || c.job_cleaned {
            return None;
        }
        c.job_polls += 1;
        let fails_for_good = c.archive_not_empty || b.job_fails.is_some();
        if c.stuck_on_pvc {
            // C7: its pod never runs.
            return Some(json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": JOB, "namespace": "database",
                              "ownerReferences": [{"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "name": "shared-pg", "uid": c.uid, "controller": true}]},
                "spec": {"template": {"spec": {"containers": []}}},
                "status": {"active": 1}
            }));
        }
        let failed_pods = c
            .job_polls
            .min(if fails_for_good { 6 } else { b.job_retries });
        let done = c.phase_index >= b.phases.len() && !fails_for_good;
        let status = if fails_for_good && c.job_polls > 3 {
            json!({"failed": 6, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]})
        } else if done {
            if c.job_polls > b.phases.len() as u32 + 2 {
                c.job_cleaned = true; // CNPG deletes completed Jobs
            }
            json!({"succeeded": 1, "failed": failed_pods, "conditions": [{"type": "Complete", "status": "True"}]})
        } else {
            json!({"active": 1, "failed": failed_pods})
        };
        Some(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": JOB, "namespace": "database",
                          "ownerReferences": [{"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "name": "shared-pg", "uid": c.uid, "controller": true}]},
            "spec": {"template": {"spec": {"containers": []}}},
            "status": status
        }))
    }

    fn job_log(&self, st: &State) -> String {
        let lineage = st
            .cluster
            .as_ref()
            .map(|c| c.server_name.clone())
            .unwrap_or_default();
        match (
            st.behaviour.job_fails,
            st.cluster.as_ref().is_some_and(|c| c.archive_not_empty),
        ) {
            (_, true) => format!(
                "{{\"level\":\"info\",\"msg\":\"Starting barman-cloud-check-wal-archive\"}}\nERROR: WAL archive check failed for server {lineage}: Expected empty archive\n{{\"level\":\"error\",\"msg\":\"unexpected failure invoking barman-cloud-wal-archive: exit status 1\"}}\n"
            ),
            (Some(text), false) => format!("{{\"level\":\"error\",\"msg\":\"{text}\"}}\n"),
            _ => "{\"level\":\"info\",\"msg\":\"restore completed\"}\n".into(),
        }
    }

    fn psql(&self, st: &mut State, sql: &str) -> (String, String, i32) {
        tick_fence(st);
        let running = st
            .cluster
            .as_ref()
            .is_some_and(|c| !c.down && c.terminating.is_none());
        if running && st.cluster.as_ref().is_some_and(|c| c.fenced) {
            // C2: a fast shutdown under way.
            return (
                String::new(),
                "psql: error: connection to server on socket \"/controller/run/.s.PGSQL.5432\" failed: FATAL:  the database system is shutting down\n".into(),
                2,
            );
        }
        if !running {
            // C2: a fenced instance's PostgreSQL is down.
            return (
                String::new(),
                "psql: error: connection to server on socket \"/controller/run/.s.PGSQL.5432\" failed: No such file or directory\n".into(),
                2,
            );
        }
        if sql.contains("pg_switch_wal()") {
            let lineage = st
                .cluster
                .as_ref()
                .map(|c| c.server_name.clone())
                .unwrap_or_default();
            // C6: the switch completes the segment in use, archived at once.
            let name = self.archive(st, &lineage).unwrap_or_default();
            (format!("{name} {} 0\n", st.next_xid), String::new(), 0)
        } else if sql == "select pg_snapshot_xmax(pg_current_snapshot())" {
            (format!("{}\n", st.next_xid), String::new(), 0)
        } else if sql == "select 1" {
            ("1\n".into(), String::new(), 0)
        } else if sql.contains("pg_stat_archiver") {
            if st.behaviour.commits_during_archive > 0 {
                st.behaviour.commits_during_archive -= 1;
                st.next_xid += 1; // a transaction that wrote committed
            }
            (
                format!("{}\n", st.last_archived_wal.clone().unwrap_or_default()),
                String::new(),
                0,
            )
        } else {
            (String::new(), format!("ERROR: unexpected query {sql}\n"), 1)
        }
    }
}

/// C2: one look at a fenced Cluster whose PostgreSQL is still stopping.
fn tick_fence(st: &mut State) {
    let Some(c) = st.cluster.as_mut() else {
        return;
    };
    let half = st.behaviour.fence_looks / 2;
    match c.fence_left {
        Some(0) => {
            c.down = true;
            c.unready = true;
            c.fence_left = None;
        }
        Some(n) => {
            c.fence_left = Some(n - 1);
            c.unready = n <= half;
        }
        None => {}
    }
    if c.unready && !c.recreated {
        c.status["readyInstances"] = json!(0);
        c.status["conditions"][0]["status"] = json!("False");
    }
}

fn walk_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk_count(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// A CNPG Cluster object as the API returns it, for scripted answers.
pub fn scripted_cluster(phase: &str, ready: bool, ready_instances: i64, recovery: bool) -> Value {
    let bootstrap = if recovery {
        json!({"recovery": {"source": "shared-pg-backup"}})
    } else {
        json!({"initdb": {"database": "app", "owner": "app"}})
    };
    json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": {"name": "shared-pg", "namespace": "database", "resourceVersion": "1", "uid": "00000000-0000-0000-0000-000000000001"},
        "spec": {"instances": 2, "bootstrap": bootstrap},
        "status": {
            "phase": phase, "readyInstances": ready_instances, "instances": 2,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }, "reason": "ClusterIsReady"}]
        }
    })
}

impl FakeCluster {
    /// Answers GETs of the Cluster from `script` (see [`State::script`]),
    /// with no Argo CD behind it.
    pub fn scripted(script: Vec<Option<Value>>) -> FakeCluster {
        let f = Self::start(PathBuf::from("/nonexistent"), Behaviour::default());
        f.state.lock().unwrap().script = script.into();
        f
    }

    pub fn gets(&self) -> u32 {
        self.state.lock().unwrap().cluster_gets
    }

    /// Argo CD tracks `main` of the bare repository `bare`; no store.
    pub fn start(bare: PathBuf, behaviour: Behaviour) -> FakeCluster {
        Self::start_with_store(bare, None, behaviour)
    }

    /// With the backup store (a local mirror) the fake primary archives into.
    pub fn start_with_store(
        bare: PathBuf,
        store: Option<PathBuf>,
        behaviour: Behaviour,
    ) -> FakeCluster {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let world = World { bare, store };
        let mut st = State {
            behaviour,
            requests: Vec::new(),
            synced: None,
            cluster: None,
            uids: 0,
            deletes: 0,
            delete_policies: Vec::new(),
            fences: 0,
            syncs_started: 0,
            synced_reports: 0,
            operations: Vec::new(),
            operation_state: None,
            pushed_after: false,
            archived: Vec::new(),
            reviews: Vec::new(),
            last_archived_wal: None,
            old_pvcs: None,
            next_xid: 742,
            backups: Vec::new(),
            faults: Vec::new(),
            script: Default::default(),
            cluster_gets: 0,
            objects: Default::default(),
            logs: Default::default(),
            kanidm: Kanidm::default(),
            volume: Default::default(),
            copy_saw_pods: None,
            created: Vec::new(),
        };
        let started = "2026-11-26T00:00:00Z".to_string();
        st.kanidm = Kanidm {
            configmap: git(&world.bare, &["show", &format!("main:{KANIDM_CM}")])
                .unwrap_or_default(),
            synced: git(&world.bare, &["rev-parse", "main"]),
            replicas: 2,
            generation: 1,
            revision: 1,
            pods: vec![
                ("kanidm-0".into(), 1, started.clone(), true),
                ("kanidm-1".into(), 1, started, true),
            ],
        };
        // The Cluster as it runs before the outage: initdb, own lineage.
        world.new_cluster(&mut st, false, "shared-pg".into(), false);
        if let Some(head) = git(&world.bare, &["rev-parse", "main"]) {
            st.synced = Some(head);
        }
        let state = Arc::new(Mutex::new(st));
        let (s2, st2) = (server.clone(), state.clone());
        let thread = std::thread::spawn(move || {
            for mut req in s2.incoming_requests() {
                let path = req.url().split('?').next().unwrap_or_default().to_string();
                // The pod an exec runs in: .../pods/<pod>/exec.
                let exec_pod = path
                    .trim_end_matches("/exec")
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                if path.ends_with("/exec") && req.url().contains("stdin=true") {
                    let cmd = exec_command(req.url());
                    {
                        let mut st = st2.lock().unwrap();
                        st.requests.push((
                            Instant::now(),
                            format!("EXEC< {} @{exec_pod}", cmd.join(" ")),
                        ));
                        st.copy_saw_pods = Some(st.kanidm.pods.len());
                    }
                    serve_exec_input(req, &cmd, &st2);
                    continue;
                }
                if path.ends_with("/exec") {
                    let cmd = exec_command(req.url());
                    let answer = {
                        let mut st = st2.lock().unwrap();
                        st.requests.push((
                            Instant::now(),
                            format!("EXEC {} @{exec_pod}", cmd.join(" ")),
                        ));
                        let own_cert = st
                            .behaviour
                            .pod_certs
                            .iter()
                            .find(|(p, _)| *p == exec_pod)
                            .map(|(_, c)| c.clone());
                        if let (Some(c), Some("show-replication-certificate")) =
                            (own_cert, cmd.get(1).map(String::as_str))
                        {
                            (
                                kanidmd_line("INFO", &format!(" | certificate: \"{c}\"")),
                                String::new(),
                                0,
                            )
                        } else if cmd.first().map(String::as_str) == Some("psql")
                            && exec_pod.contains("-drill-")
                        {
                            // D1: the drill's restored PostgreSQL answers.
                            let sql = cmd.last().cloned().unwrap_or_default();
                            if sql == "select count(*) from pg_class" {
                                ("415\n".into(), String::new(), 0)
                            } else {
                                (
                                    String::new(),
                                    format!("ERROR: relation in {sql} does not exist\n"),
                                    1,
                                )
                            }
                        } else if cmd.first().map(String::as_str) == Some("psql") {
                            let sql = cmd.last().cloned().unwrap_or_default();
                            world.psql(&mut st, &sql)
                        } else {
                            (st.behaviour.exec)(&cmd)
                        }
                    };
                    serve_exec(req, &cmd, answer);
                    continue;
                }
                let mut body = String::new();
                let _ = req.as_reader().read_to_string(&mut body);
                let method = req.method().as_str().to_string();
                let query = req
                    .url()
                    .split_once('?')
                    .map(|(_, q)| q.to_string())
                    .unwrap_or_default();
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
                        None => handle(&world, &mut st, &method, &path, &query, &body),
                    }
                };
                let text = match &value {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                };
                let mut resp = tiny_http::Response::from_string(text).with_status_code(status);
                let ctype = if value.is_string() {
                    "text/plain"
                } else {
                    "application/json"
                };
                resp.add_header(tiny_http::Header::from_bytes("Content-Type", ctype).unwrap());
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
            .find(|(_, r)| r.starts_with(what))
            .map(|(t, _)| *t)
    }
}

fn not_found(what: &str) -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "NotFound", "code": 404, "message": format!("{what} not found")}),
    )
}

fn handle(
    w: &World,
    st: &mut State,
    method: &str,
    path: &str,
    query: &str,
    body: &str,
) -> (u16, Value) {
    let head = || git(&w.bare, &["rev-parse", "main"]);
    match (method, path) {
        ("GET", APP) => {
            w.reconcile(st);
            w.reconcile_kanidm(st);
            (
                200,
                json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "ApplicationList", "metadata": {"resourceVersion": "7"}, "items": [application(st, head().as_deref()), kanidm_application(st, head().as_deref())]}),
            )
        }
        ("GET" | "PATCH", KANIDM_APP) => {
            w.reconcile_kanidm(st); // a hard refresh compares at once
            (200, kanidm_application(st, head().as_deref()))
        }
        // The simulated Kanidm, unless a test put its own object there.
        ("GET", "/apis/apps/v1/namespaces/kanidm/statefulsets/kanidm")
            if !st.objects.contains_key(path) =>
        {
            w.reconcile_kanidm(st);
            st.kanidm.roll();
            (200, st.kanidm.statefulset())
        }
        ("GET", "/api/v1/namespaces/kanidm/pods") => (200, st.kanidm.pod_list()),
        ("GET", "/api/v1/namespaces/kanidm/configmaps/kanidm-repl")
            if !st.objects.contains_key(path) =>
        {
            w.reconcile_kanidm(st);
            (200, st.kanidm.configmap_data())
        }
        ("GET", p) if p == format!("{APP}/database") => {
            w.reconcile(st);
            let mut app = application(st, head().as_deref());
            // Counted once the recovery is what is synced.
            if app["status"]["sync"]["status"] == "Synced" && st.recovery_spec() {
                st.synced_reports += 1;
                if st
                    .behaviour
                    .drift_after_synced
                    .is_some_and(|n| st.synced_reports > n)
                {
                    app["status"]["sync"]["status"] = json!("OutOfSync");
                }
            }
            (200, app)
        }
        ("PATCH", p) if p == format!("{APP}/database") => {
            let patch: Value = serde_json::from_str(body).unwrap_or_default();
            if patch["operation"]["sync"].is_object() {
                // A3, A4: a sync started by hand applies its revision,
                // creating what is missing; it may end in Error first.
                st.syncs_started += 1;
                st.operations.push(patch["operation"].clone());
                let op = &patch["operation"]["sync"];
                let rev = op["revision"]
                    .as_str()
                    .or_else(|| op["revisions"][0].as_str())
                    .map(str::to_string)
                    .or_else(head);
                if st.behaviour.sync_errors > 0 {
                    st.behaviour.sync_errors -= 1;
                    st.operation_state = Some(
                        json!({"phase": "Error", "message": "one or more objects failed to apply, reason: Internal error occurred: failed calling webhook \"mcluster.cnpg.io\": connection refused"}),
                    );
                } else if !st.behaviour.never_sync
                    && let Some(rev) = rev
                {
                    let (recovery, server) = manifest_at(&w.bare, &rev);
                    w.apply(st, rev, recovery, server);
                    st.operation_state = Some(
                        json!({"phase": "Succeeded", "message": "successfully synced (all tasks run)"}),
                    );
                }
            } else {
                w.reconcile(st); // a hard refresh compares at once
            }
            (200, application(st, head().as_deref()))
        }
        ("GET", CLUSTER) if !st.script.is_empty() => {
            st.cluster_gets += 1;
            let answer = if st.script.len() > 1 {
                st.script.pop_front().flatten()
            } else {
                st.script.front().cloned().flatten()
            };
            match answer {
                Some(v) => (200, v),
                None => not_found("clusters.postgresql.cnpg.io \"shared-pg\""),
            }
        }
        ("GET", CLUSTER) => {
            st.cluster_gets += 1;
            // Argo CD's controller runs on its own: it compares (and
            // self-heals) whether or not anyone asks it.
            w.reconcile(st);
            match w.get_cluster(st) {
                Some(v) => (200, v),
                None => not_found("clusters.postgresql.cnpg.io \"shared-pg\""),
            }
        }
        ("PATCH", CLUSTER) => {
            let patch: Value = serde_json::from_str(body).unwrap_or_default();
            let Some(c) = st.cluster.as_mut() else {
                return not_found("clusters.postgresql.cnpg.io \"shared-pg\"");
            };
            if patch["metadata"]["annotations"]["cnpg.io/fencedInstances"] == "[\"*\"]" {
                c.fenced = true;
                c.fence_left = Some(st.behaviour.fence_looks);
                st.fences += 1;
                tick_fence(st);
            }
            let Some(c) = st.cluster.as_mut() else {
                return not_found("clusters.postgresql.cnpg.io \"shared-pg\"");
            };
            let v = cluster_json(c);
            (200, v)
        }
        ("DELETE", CLUSTER) => {
            let opts: Value = serde_json::from_str(body).unwrap_or_default();
            let Some(c) = st.cluster.as_mut() else {
                return not_found("clusters.postgresql.cnpg.io \"shared-pg\"");
            };
            if let Some(uid) = opts["preconditions"]["uid"].as_str()
                && uid != c.uid
            {
                return (
                    409,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {}", c.uid)}),
                );
            }
            st.delete_policies
                .push(opts["propagationPolicy"].as_str().unwrap_or("").to_string());
            if c.terminating.is_none() {
                c.terminating = Some(st.behaviour.terminating_gets);
                st.deletes += 1;
                st.old_pvcs = Some(st.behaviour.pvc_looks);
            }
            let v = cluster_json(c);
            (200, v)
        }
        ("GET", p) if p == format!("/apis/batch/v1/namespaces/database/jobs/{JOB}") => {
            match w.job(st) {
                Some(v) => (200, v),
                None => not_found(&format!("jobs.batch \"{JOB}\"")),
            }
        }
        ("GET", "/api/v1/namespaces/database/persistentvolumeclaims") => {
            // C7: the live Cluster's volumes, or the deleted one's while
            // they still terminate.
            let live = st.cluster.as_ref().is_some_and(|c| c.terminating.is_none());
            let terminating = match st.old_pvcs.as_mut() {
                Some(n) if *n > 0 => {
                    *n = n.saturating_sub(1);
                    true
                }
                _ => false,
            };
            if st.old_pvcs == Some(0) {
                st.old_pvcs = None;
            }
            let items: Vec<Value> = if st.cluster.is_none() && st.behaviour.orphan_pvc {
                vec![json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "shared-pg-1", "namespace": "database", "labels": {"cnpg.io/cluster": "shared-pg", "cnpg.io/pvcRole": "PG_DATA"}},
                    "spec": {"accessModes": ["ReadWriteOnce"]}})]
            } else if terminating || live || st.cluster.is_some() {
                (1..=2)
                    .map(|i| {
                        let mut meta = json!({"name": format!("shared-pg-{i}"), "namespace": "database",
                                              "labels": {"cnpg.io/cluster": "shared-pg", "cnpg.io/pvcRole": "PG_DATA"}});
                        if terminating || st.cluster.as_ref().is_some_and(|c| c.terminating.is_some()) {
                            meta["deletionTimestamp"] = json!("2026-11-26T04:00:00Z");
                            meta["finalizers"] = json!(["kubernetes.io/pvc-protection"]);
                        }
                        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta,
                               "spec": {"accessModes": ["ReadWriteOnce"]}})
                    })
                    .collect()
            } else {
                vec![]
            };
            (
                200,
                json!({"apiVersion": "v1", "kind": "PersistentVolumeClaimList", "metadata": {"resourceVersion": "12"}, "items": items}),
            )
        }
        ("GET", "/api/v1/namespaces/database/pods") => {
            let selector = percent_decode(
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("labelSelector="))
                    .unwrap_or(""),
            );
            let recreated = st
                .cluster
                .as_ref()
                .is_some_and(|c| c.recreated && c.terminating.is_none());
            let instances = selector == "cnpg.io/cluster=shared-pg,cnpg.io/podRole=instance";
            if instances {
                tick_fence(st);
            }
            // C7: the old volumes go in their own time.
            if st.cluster.as_ref().is_some_and(|c| c.recreated) {
                st.old_pvcs = match st.old_pvcs {
                    Some(n) if n > 1 => Some(n - 1),
                    _ => None,
                };
            }
            let items: Vec<Value> = if instances {
                // C2: the old Cluster's instance pods, Ready until it is down.
                match st.cluster.as_ref().filter(|c| c.terminating.is_none() && !c.recreated) {
                    Some(c) => (1..=2)
                        .map(|i| json!({"apiVersion": "v1", "kind": "Pod",
                            "metadata": {"name": format!("shared-pg-{i}"), "namespace": "database",
                                         "labels": {"cnpg.io/cluster": "shared-pg", "cnpg.io/podRole": "instance", "cnpg.io/instanceName": format!("shared-pg-{i}")}},
                            "spec": {"containers": [{"name": "postgres"}]},
                            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if c.unready { "False" } else { "True" }}]}}))
                        .collect(),
                    None => vec![],
                }
            } else if recreated
                && (selector == "cnpg.io/cluster=shared-pg"
                    || selector == format!("job-name={JOB}"))
            {
                let status = if st.cluster.as_ref().is_some_and(|c| c.stuck_on_pvc) {
                    let why = if st.old_pvcs.is_some() {
                        "is being deleted"
                    } else {
                        "not found"
                    };
                    json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": format!("0/3 nodes are available: persistentvolumeclaim \"shared-pg-1\" {why}. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.")}]})
                } else {
                    json!({"phase": "Running"})
                };
                vec![json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("{JOB}-x7k2p"), "namespace": "database", "creationTimestamp": "2026-11-26T04:00:00Z",
                                 "labels": {"cnpg.io/cluster": "shared-pg", "cnpg.io/jobRole": "full-recovery", "job-name": JOB}},
                    "spec": {"containers": [{"name": "full-recovery"}]},
                    "status": status})]
            } else {
                vec![]
            };
            (
                200,
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "9"}, "items": items}),
            )
        }
        ("GET", p) if p == format!("/api/v1/namespaces/database/pods/{JOB}-x7k2p/log") => {
            (200, Value::String(w.job_log(st)))
        }
        ("POST", BACKUPS) => {
            let obj: Value = serde_json::from_str(body).unwrap_or_default();
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            st.backups.push((name, 0));
            (201, obj)
        }
        ("GET", p) if p.starts_with(&format!("{BACKUPS}/")) => {
            let name = &p[BACKUPS.len() + 1..];
            let fails = st.behaviour.backup_fails;
            let invalid = st.behaviour.backup_invalid;
            let Some((_, gets)) = st.backups.iter_mut().find(|(n, _)| n == name) else {
                return not_found(&format!("backups.postgresql.cnpg.io \"{name}\""));
            };
            *gets += 1;
            if let Some(why) = invalid {
                return (
                    200,
                    json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Backup", "metadata": {"name": name, "namespace": "database"}, "spec": {"cluster": {"name": "shared-pg"}}, "status": {"phase": "invalid backup definition", "error": why}}),
                );
            }
            // C5: a Backup that ended stays as it ended.
            let status = match (*gets, fails) {
                (1, _) => json!({"phase": "running"}),
                (_, Some(e)) => {
                    *gets = u32::MAX / 2;
                    json!({"phase": "failed", "error": e})
                }
                (g, None) if g >= u32::MAX / 2 => {
                    json!({"phase": "failed", "error": "can't upload: AccessDenied"})
                }
                _ => json!({"phase": "completed", "backupId": "20261126T050000"}),
            };
            (
                200,
                json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Backup", "metadata": {"name": name, "namespace": "database"}, "spec": {"cluster": {"name": "shared-pg"}}, "status": status}),
            )
        }
        ("GET", "/api/v1/namespaces/database/secrets/r2-backup-credentials") => {
            match st.behaviour.secret {
                Some((id, secret)) => (
                    200,
                    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "r2-backup-credentials", "namespace": "database"}, "type": "Opaque", "data": {"credential": b64(id), "password": b64(secret)}}),
                ),
                None => not_found("secrets \"r2-backup-credentials\""),
            }
        }
        // The API server answers a SelfSubjectAccessReview with the
        // request echoed and `status.allowed` (authorization/v1,
        // https://kubernetes.io/docs/reference/access-authn-authz/authorization/#checking-api-access);
        // a denial carries no error, only allowed=false.
        ("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews") => {
            let mut review: Value = serde_json::from_str(body).unwrap_or_default();
            let ra = &review["spec"]["resourceAttributes"];
            let resource = match ra["subresource"].as_str() {
                Some(sub) if !sub.is_empty() => {
                    format!("{}/{sub}", ra["resource"].as_str().unwrap_or_default())
                }
                _ => ra["resource"].as_str().unwrap_or_default().to_string(),
            };
            let asked = format!("{} {resource}", ra["verb"].as_str().unwrap_or_default());
            st.reviews.push(asked.clone());
            let allowed = !st.behaviour.denied.contains(&asked.as_str());
            review["status"] = if allowed {
                json!({"allowed": true, "reason": "RBAC: allowed by RoleBinding \"drgit\""})
            } else {
                json!({"allowed": false})
            };
            (201, review)
        }
        // The API server's build info (`GET /version`, k8s.io/apimachinery
        // pkg/version.Info), as kube's Client::apiserver_version reads it.
        ("GET", "/version") => (
            200,
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.4", "gitCommit": "fake", "gitTreeState": "clean", "buildDate": "2025-08-12T00:00:00Z", "goVersion": "go1.24.5", "compiler": "gc", "platform": "linux/amd64"}),
        ),
        ("POST", p) => {
            let mut obj: Value = serde_json::from_str(body).unwrap_or_default();
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let key = format!("{p}/{name}");
            if st.objects.contains_key(&key) {
                return (
                    409,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": format!("{name} already exists")}),
                );
            }
            if p.ends_with("/clusters")
                && let Some(why) = cnpg_webhook(&obj["spec"])
            {
                return (
                    422,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422,
                           "message": format!("admission webhook \"vcluster.cnpg.io\" denied the request: Cluster.postgresql.cnpg.io \"{name}\" is invalid: {why}")}),
                );
            }
            obj["metadata"]["uid"] = json!(format!("uid-{name}"));
            st.created.push(obj.clone());
            st.objects.insert(key, obj.clone());
            (201, obj)
        }
        // K5 (see the module doc).
        ("GET", p) if p.ends_with("/log") && p.contains("/pods/drgit-kanidm-drill-") => {
            let key = p.trim_end_matches("/log");
            let Some(pod) = st.objects.get(key).cloned() else {
                return not_found(p);
            };
            let container = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("container="))
                .unwrap_or_default();
            let restore = command_of(&pod["spec"]["initContainers"][1]);
            match container {
                "restore" => (200, Value::String(restore_log(st, &restore).0)),
                "check" => (
                    200,
                    Value::String(
                        kanidmd_line("INFO", "Domain UUID: 00000000-0000-0000-0000-ffff00000025")
                            + &kanidmd_line("INFO", "Domain Name: idm.home.example")
                            + &kanidmd_line("INFO", "Domain Level: 10"),
                    ),
                ),
                _ => (400, json!({"message": "a container name must be given"})),
            }
        }
        ("GET", p) if st.objects.contains_key(p) && p.contains("/pods/drgit-kanidm-drill-") => {
            let restore = command_of(&st.objects[p]["spec"]["initContainers"][1]);
            let copied = restore.last().is_some_and(|f| st.volume.contains_key(f));
            let status = if !copied || st.behaviour.restore_pending {
                json!({"phase": "Pending", "initContainerStatuses": [{"name": "receive", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": {"running": {}}}]})
            } else {
                let (log, code) = restore_log(st, &restore);
                let ok = code == 0 && log.contains("Restore Success");
                json!({"phase": if ok { "Succeeded" } else { "Failed" }})
            };
            let obj = st.objects.get_mut(p).unwrap();
            obj["status"] = status;
            (200, obj.clone())
        }
        ("GET", p) if p.ends_with("/log") => {
            let pod = p
                .trim_end_matches("/log")
                .rsplit('/')
                .next()
                .unwrap_or_default();
            match st.logs.get(pod) {
                Some(l) => (200, Value::String(l.clone())),
                None => not_found(&format!("pods \"{pod}\"")),
            }
        }
        // D1: a Cluster created through the API (not the one Argo CD
        // deploys) recovers as CNPG's does: phase "Setting up primary"
        // while the full-recovery Job runs, then "Cluster in healthy state"
        // with its instances ready and the Ready condition True
        // (cloudnative-pg api/v1 cluster_types.go, PhaseHealthy); a
        // recovery that cannot finish stays there, with PostgreSQL's words
        // as the phase reason.
        ("GET", p) if st.objects.contains_key(p) && st.objects[p]["kind"] == "Cluster" => {
            let fails = st.behaviour.drill_fails;
            let obj = st.objects.get_mut(p).unwrap();
            let looks = obj["drgit_fake_gets"].as_u64().unwrap_or(0) + 1;
            obj["drgit_fake_gets"] = json!(looks);
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let instances = obj["spec"]["instances"].as_i64().unwrap_or(1);
            obj["status"] = match (looks, fails) {
                (_, Some(text)) => {
                    json!({"phase": "Setting up primary", "phaseReason": text, "readyInstances": 0})
                }
                (1, None) => json!({"phase": "Setting up primary", "readyInstances": 0}),
                _ => json!({
                    "phase": "Cluster in healthy state",
                    "readyInstances": instances,
                    "currentPrimary": format!("{name}-1"),
                    "conditions": [{"type": "Ready", "status": "True", "message": "Cluster is Ready"}]
                }),
            };
            let mut shown = obj.clone();
            shown.as_object_mut().map(|o| o.remove("drgit_fake_gets"));
            (200, shown)
        }
        ("GET", p) if st.objects.contains_key(p) => {
            let obj = st.objects[p].clone();
            if obj["kind"] != "Pod" {
                return (200, obj);
            }
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let command = command_of(&obj["spec"]["containers"][0]);
            let containers: Vec<String> = obj["spec"]["containers"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .filter_map(|c| c["name"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let restore = command.get(1).map(String::as_str) == Some("database");
            let status = if obj["status"].is_null() || (restore && st.behaviour.restore_pending) {
                json!({"phase": "Pending"})
            } else if command.first().map(String::as_str) == Some("sleep") {
                json!({"phase": "Running"})
            } else {
                let code = if restore {
                    let (log, code) = restore_log(st, &command);
                    st.logs.insert(name.clone(), log);
                    code
                } else {
                    0
                };
                json!({"phase": if code == 0 { "Succeeded" } else { "Failed" }, "containerStatuses": containers.iter().map(|c| json!({"name": c, "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": {"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }}}})).collect::<Vec<_>>()})
            };
            let obj = st.objects.get_mut(p).unwrap();
            obj["status"] = status;
            (200, obj.clone())
        }
        ("DELETE", p) if st.objects.contains_key(p) => {
            let obj = st.objects.remove(p).unwrap();
            (200, obj)
        }
        _ => not_found(path),
    }
}

/// What the kanidmd stand-in's `database restore -c CONFIG FILE` logs
/// (K4, server/core/src/lib.rs `restore_server_core`): the file must be
/// on the volume; gzip is decided by the name (`.gz`); success ends with
/// `✅ Restore Success!`.
/// A container's `command`, as strings.
fn command_of(container: &Value) -> Vec<String> {
    container["command"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn restore_log(st: &State, command: &[String]) -> (String, i32) {
    let file = command.last().cloned().unwrap_or_default();
    if let Some(why) = st.behaviour.restore_fails {
        return (
            kanidmd_line("ERROR", &format!("Failed to restore database: {why}")),
            1,
        );
    }
    let Some(data) = st.volume.get(&file) else {
        // kanidmd returns without an error exit here.
        return (
            kanidmd_line(
                "ERROR",
                &format!("File::open error reading {file}: No such file or directory (os error 2)"),
            ),
            0,
        );
    };
    let gzip = data.starts_with(&[0x1f, 0x8b]);
    if gzip != file.ends_with(".gz") {
        return (
            kanidmd_line("ERROR", "Failed to restore database: Err(SerdeJsonError)"),
            1,
        );
    }
    (
        kanidmd_line("INFO", "Database loaded successfully")
            + &kanidmd_line("INFO", "✅ Restore Success!"),
        0,
    )
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

fn exec_command(url: &str) -> Vec<String> {
    let query = url
        .split_once('?')
        .map(|(_, q)| q.to_string())
        .unwrap_or_default();
    query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("command="))
        .map(percent_decode)
        .collect()
}

/// Kubernetes exec over a websocket (`v4.channel.k8s.io`): channel 1 is
/// stdout, 2 stderr, 3 the status object.
type Ws = tungstenite::WebSocket<Box<dyn tiny_http::ReadWrite + Send>>;

fn upgrade(req: tiny_http::Request) -> Ws {
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
    tungstenite::WebSocket::from_raw_socket(stream, tungstenite::protocol::Role::Server, None)
}

/// An exec that reads standard input (channel 0): drgit's copy onto a
/// volume, `head -c SIZE > PART && mv PART DEST && sha256sum DEST`, as a
/// shell in the helper pod runs it. The bytes land in `State::volume`.
fn serve_exec_input(req: tiny_http::Request, cmd: &[String], state: &Arc<Mutex<State>>) {
    use sha2::Digest;
    let script = cmd.last().cloned().unwrap_or_default();
    let size: usize = script
        .split("head -c ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let dest = script
        .split("sha256sum ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_default()
        .trim_matches('\'')
        .to_string();
    let mut ws = upgrade(req);
    let mut data = Vec::new();
    while data.len() < size {
        match ws.read() {
            Ok(tungstenite::Message::Binary(b)) if b.first() == Some(&0) => {
                data.extend_from_slice(&b[1..])
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    data.truncate(size);
    let (out, code) = {
        let mut st = state.lock().unwrap();
        if st.behaviour.copy_truncates {
            data.truncate(size / 2);
        }
        let hex: String = sha2::Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        st.volume.insert(dest.clone(), data);
        (format!("{hex}  {dest}\n"), 0)
    };
    answer(ws, cmd, (out, String::new(), code));
}

fn serve_exec(req: tiny_http::Request, cmd: &[String], output: (String, String, i32)) {
    answer(upgrade(req), cmd, output);
}

fn answer(mut ws: Ws, cmd: &[String], (out, err, code): (String, String, i32)) {
    use tungstenite::Message;
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
