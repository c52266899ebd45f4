//! The error every command returns, and the exit status it maps to:
//! 2 for bad usage or bad input (a config key, a manifest, a target time the
//! backups cannot reach), 1 for everything else that failed.

use crate::backup::StoreError;
use crate::backup::barman::CatalogError;
use crate::cluster::ClusterError;
use crate::config::ConfigError;
use crate::gitops::GitError;
use crate::gitops::forge::ForgeError;
use crate::manifest::ManifestError;
use crate::timearg::TimeError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{file}: {source}")]
    Manifest { file: String, source: ManifestError },
    #[error(
        "cannot read the manifest {file}: {source} (set `{setting}` in drgit.toml, relative to --repo)"
    )]
    ReadManifest {
        file: String,
        setting: &'static str,
        source: std::io::Error,
    },
    #[error("{what} in pod {namespace}/{pod} did not succeed: {reason}{}", if output.is_empty() { String::new() } else { format!("\nIts output (the end):\n{output}") })]
    PodCommand {
        what: String,
        namespace: String,
        pod: String,
        reason: String,
        output: String,
    },
    #[error(
        "StatefulSet {namespace}/{name} did not finish its rolling restart within {waited:?} ({last}). Reloader restarts it when the ConfigMap changes (annotation `configmap.reloader.stakater.com/reload`); without Reloader, run `kubectl rollout restart statefulset/{name} -n {namespace}`, then `drgit resume`"
    )]
    NotRestarted {
        namespace: String,
        name: String,
        waited: std::time::Duration,
        last: String,
    },
    #[error(transparent)]
    Cert(#[from] crate::cert::CertError),
    #[error(
        "{backup}: {why}. Restore with an image of the backup's series (`--image docker.io/kanidm/server:<that version>`), or pick another backup (`drgit backups status`)"
    )]
    RestoreImage { backup: String, why: String },
    #[error("{file} is not a usable etcd snapshot: {source}; {hint}")]
    Snapshot {
        file: String,
        hint: &'static str,
        source: crate::backup::verify::Corrupt,
    },
    #[error("refusing to reset the control planes: {reason}")]
    RefuseReset { reason: String },
    #[error(transparent)]
    Talos(#[from] crate::cluster::talos::TalosError),
    #[error("cannot read {file}: {source}")]
    ReadFile {
        file: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Time(#[from] TimeError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(
        "{file}: no earlier version of the Cluster in this branch's Git history has `spec.bootstrap.initdb`, so drgit cannot restore the original settings; write the `initdb` block by hand"
    )]
    NoInitdbHistory { file: String },
    #[error(
        "{location}: the 100 serverNames from `{after}` on all hold objects already; set `serverName` in the manifest to a new lineage by hand"
    )]
    NoFreeLineage { after: String, location: String },
    #[error(
        "{file}: {field} is {destination}, but drgit reads the backups from {reads} (`[backup] url` or --backup-url, plus `[postgres] catalog_prefix`): drgit would check one catalog and CNPG restore from another. Point `[backup] url` at the bucket the manifest names"
    )]
    BackupLocation {
        file: String,
        field: String,
        destination: String,
        reads: String,
    },
    #[error(transparent)]
    Forge(#[from] ForgeError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
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
    #[error("CNPG Cluster {namespace}/{name} was not healthy within {waited:?}; last seen: {last}")]
    Timeout {
        namespace: String,
        name: String,
        waited: std::time::Duration,
        last: String,
    },
    #[error(
        "the on-demand Backup {namespace}/{name} failed: {error}. The recovered Cluster runs, but the new lineage has no base backup until the next scheduled one; fix the cause, then `drgit resume`"
    )]
    BackupFailed {
        namespace: String,
        name: String,
        error: String,
    },

    #[error(
        "branch `{branch}` exists and its last commit was not made by drgit; drgit will not move someone else's branch. Rename or delete it, or set `[git] branch_prefix`"
    )]
    NotOurBranch { branch: String },
    #[error(
        "--direct commits on the branch Argo CD tracks (`{tracked}`), but HEAD is on `{branch}`; switch to `{tracked}` or set `[git] tracked_branch`"
    )]
    NotTrackedBranch { branch: String, tracked: String },
    #[error("{source}{}", if *undone { "\nThe local commit was undone; the working copy is as it was before." } else { "\nThe local commit could NOT be undone; see the log above." })]
    PublishFailed { source: Box<Error>, undone: bool },
    #[error("drgit's state file {path}: {detail}")]
    State { path: String, detail: String },
    #[error("drgit's state file {path}: {source}")]
    StateFile {
        path: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Download(#[from] crate::backup::download::DownloadError),
    #[error(transparent)]
    Lookup(#[from] crate::backup::kinds::LookupError),
    #[error(
        "--wait follows the change until the recovery is done: publish it with --pr or --push --direct"
    )]
    WaitNeedsPublish,
    #[error(
        "Argo CD Application {application} did not report Synced at {commit} in time (last: {status}); check its sync errors in Argo CD, then `drgit resume`"
    )]
    NotSynced {
        application: String,
        commit: String,
        status: String,
    },
    #[error(
        "the sync drgit started of Argo CD Application {application} ended {phase} {attempts} time(s): {message}; fix what Argo CD names, then `drgit resume`"
    )]
    SyncFailed {
        application: String,
        phase: String,
        attempts: u32,
        message: String,
    },
    #[error("refusing to delete the Cluster: {reason}")]
    RefuseDelete { reason: String },
    #[error("step `{step}` did not do what it says: {detail}")]
    NotDone { step: String, detail: String },
    #[error(
        "the new lineage `{lineage}` is no longer empty ({objects}): the old primary archived into it after Argo CD applied the change, and CNPG would fail the recovery with \"Expected empty archive\". Nothing was deleted. Run `drgit pg-recover` again: it moves the Cluster to the next empty lineage"
    )]
    NewLineageNotEmpty { lineage: String, objects: String },
    #[error(
        "Argo CD Application {application} is synced at {revision}, which contains the recovery commit {commit} but a different {manifest}: it was changed since. Check what changed it, then run `drgit pg-recover` again"
    )]
    ManifestChangedSince {
        application: String,
        revision: String,
        commit: String,
        manifest: String,
    },
    #[error(
        "the re-created CNPG Cluster {namespace}/{name} cannot start: its pod {pod} is unschedulable ({message}). CNPG before 1.30 binds the new Cluster's first instance to the volume of the deleted one while that is still being deleted (cloudnative-pg #11017), and nothing creates it again once it is gone, so this does not resolve itself. Delete the re-created Cluster, which holds no data yet (`kubectl -n {namespace} delete cluster.postgresql.cnpg.io {name}`), wait until `kubectl -n {namespace} get pvc -l cnpg.io/cluster={name}` lists none, then `drgit resume`: Argo CD re-creates it"
    )]
    StuckOnOldVolume {
        namespace: String,
        name: String,
        pod: String,
        message: String,
    },
    #[error(
        "CNPG Cluster {namespace}/{name} is fenced, but PostgreSQL was not down in every instance within {waited:?} ({last}); until it is, the old primary archives under the live spec, so nothing was merged or pushed. Check the instance pods' logs (`kubectl -n {namespace} logs {name}-1`), then `drgit resume`"
    )]
    FenceNotTaken {
        namespace: String,
        name: String,
        waited: std::time::Duration,
        last: String,
    },
    #[error(
        "the WAL segment {segment} (completed by pg_switch_wal()) was not archived within {waited:?} ({last}); check the Cluster's ContinuousArchiving condition and the bucket, then `drgit resume`"
    )]
    NotArchived {
        segment: String,
        waited: std::time::Duration,
        last: String,
    },
    #[error(
        "CNPG Cluster {namespace}/{name} was not re-created within {waited:?} ({last}); check the Argo CD Application's sync status, then `drgit resume`"
    )]
    NotRecreated {
        namespace: String,
        name: String,
        waited: std::time::Duration,
        last: String,
    },
    #[error("not confirmed: {what}. Run at a terminal to confirm, or pass --yes")]
    NeedsConfirmation { what: String },
    #[error("there is no interrupted run to resume (no .git/drgit/journal.json)")]
    NothingToResume,
    #[error(
        "an interrupted run is recorded in {path}: `drgit resume` goes on with it, `drgit status` shows it. To abandon it instead, delete that file (it holds what was fenced and deleted)"
    )]
    RunInProgress { path: String },
    #[error("interrupted in step `{step}`; `drgit resume` goes on from there")]
    Interrupted { step: String },
    #[error("backups status: {problems} problem(s), listed above")]
    Unhealthy { problems: usize },
    #[error("drill refused before anything started: {reason}")]
    DrillRefused { reason: String },
    #[error("drill: {failed} drill(s) failed, listed above; nothing they made is left")]
    DrillFailed { failed: usize },
    #[error("doctor: {failed} check(s) failed, listed above with their fixes")]
    ChecksFailed { failed: usize },
    #[error(transparent)]
    Push(#[from] crate::metrics::PushError),
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
    #[error("cannot render the template {name}: {source}")]
    Template {
        name: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_)
            | Error::Manifest { .. }
            | Error::ReadManifest { .. }
            | Error::Time(_)
            | Error::BackupLocation { .. }
            | Error::Cert(_)
            | Error::ReadFile { .. }
            | Error::RestoreImage { .. }
            | Error::Snapshot { .. } => 2,
            Error::Catalog(CatalogError::Target { .. }) => 2,
            Error::NoInitdbHistory { .. } => 2,
            Error::PublishFailed { source, .. } => source.exit_code(),
            Error::Interrupted { .. } => 130,
            _ => 1,
        }
    }
}
