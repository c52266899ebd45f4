//! Manifests in the GitOps repository: reading them, editing them in place
//! byte-exact outside the edited nodes, and writing them back atomically.
//!
//! `yaml` parses with byte spans, `edit` splices and verifies, `cnpg` knows
//! the CloudNativePG `Cluster` fields the recovery scenarios change.

pub mod cnpg;
pub mod edit;
pub mod kanidm;
pub mod statefulset;
pub mod yaml;

use std::io::Write;
use std::path::Path;

/// Why a manifest could not be read or edited. Every variant names the
/// field (as a dotted path) or the place in the file.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("malformed YAML at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "`{path}` is the alias *{alias}; drgit will not edit text reached through an alias, because the change would also apply wherever &{alias} is used. Replace the alias with the mapping itself, or make the change by hand"
    )]
    ThroughAlias { path: String, alias: String },
    #[error(
        "`{path}` defines the anchor &{anchor}, which line {line} still uses as *{anchor}; replacing it would break that reference. Move the anchor elsewhere first"
    )]
    AnchorUsed {
        path: String,
        anchor: String,
        line: usize,
    },
    #[error("`{path}` should be {expected}")]
    Shape { path: String, expected: String },
    #[error("the edit was not applied: {detail}")]
    Verify { detail: String },
    #[error("no document with kind `Cluster` (postgresql.cnpg.io) named `{name}`{found}")]
    NoCluster { name: String, found: String },
    #[error(
        "{count} documents define a CNPG Cluster named `{name}` (documents {docs}); keep one, or point the config at the right file"
    )]
    DuplicateCluster {
        name: String,
        count: usize,
        docs: String,
    },
    #[error("the Cluster has no `spec`")]
    NoSpec,
    #[error(
        "`spec.bootstrap` has both `initdb` and `recovery`; CNPG accepts only one bootstrap method. Remove one by hand, then run drgit again"
    )]
    TwoBootstraps,
    #[error(
        "`spec.bootstrap.recovery` has no `source` (it recovers from a volume snapshot or a Backup object); drgit recovers only from an object store through an external cluster"
    )]
    RecoveryWithoutSource,
    #[error(
        "the Cluster has neither `spec.bootstrap.initdb` nor `spec.bootstrap.recovery` (found {found}). Write `bootstrap: {{initdb: {{}}}}` (CNPG's default) explicitly, commit it, and run drgit again"
    )]
    NoBootstrapMethod { found: String },
    #[error(
        "the Cluster backs up both through `spec.backup.barmanObjectStore` and the `barman-cloud.cloudnative-pg.io` plugin; keep one"
    )]
    TwoBackupMethods,
    #[error("`spec.plugins[{index}].parameters.barmanObjectName` is missing")]
    NoObjectName { index: usize },
    #[error(
        "the Cluster has no object-store backup: neither `spec.backup.barmanObjectStore` nor a `barman-cloud.cloudnative-pg.io` entry in `spec.plugins`; there is nothing to recover from"
    )]
    NoObjectStoreBackup,
    #[error(
        "`spec.bootstrap.recovery.source` is `{source_name}`, but `spec.externalClusters` has no entry with that name"
    )]
    NoExternalCluster { source_name: String },
    #[error("the Cluster already recovers to {target}; nothing to change")]
    NothingToChange { target: String },
    #[error("`spec.bootstrap` is already `initdb`; there is no recovery to revert")]
    NotInRecovery,
    #[error(
        "`spec.replica.source` still uses the external cluster `{source_name}`; drgit will not remove it"
    )]
    ReplicaUsesSource { source_name: String },
    #[error("`data.{key}` is not valid TOML: {message}")]
    Toml { key: String, message: String },
    #[error(
        "no replication settings name `{origin}` as a partner (`[replication.\"{origin}\"]`); check the pod name, or give its origin"
    )]
    NoPartnerEntry { origin: String },
    #[error(
        "no replication settings for pod `{pod}`: no `[replication] origin` names it as its host (`repl://{pod}.…`) and no data key is `{pod}.toml`; check --pod"
    )]
    NoOrigin { pod: String },
    #[error(
        "`automatic_refresh` towards `{origin}` in `data.{key}` (line {line}) would still be on after the edit: the surviving node would wipe itself and copy the empty one as soon as replication resumes. Set it to `false` by hand (`automatic_refresh = false` in `[replication.\"{origin}\"]`), then run drgit again"
    )]
    AutomaticRefreshOn {
        key: String,
        origin: String,
        line: usize,
    },
    #[error("internal error while editing YAML: {0}")]
    Internal(String),
}

/// Writes `contents` to `path` atomically: a temporary file in the same
/// directory, synced, given the old file's permissions, then renamed over it.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".drgit-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(tmp.path(), meta.permissions())?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
