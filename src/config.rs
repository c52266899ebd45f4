//! `drgit.toml`: every value the runbook hard-codes, as a setting with the
//! runbook's value as its default.
//!
//! A file may set only some keys; the rest keep their defaults. An unknown
//! key is an error that names it, so a typo never silently falls back to a
//! default in the middle of a recovery.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "{what} `{url}` is neither `s3://bucket/prefix/`, `file:///absolute/dir` nor a directory path"
    )]
    BadUrl { what: String, url: String },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub backup: Backup,
    pub postgres: Postgres,
    pub kanidm: Kanidm,
    pub talos: Talos,
    pub git: Git,
    pub forge: Forge,
    pub expect: Expect,
    pub argocd: ArgoCd,
    pub drill: Drill,
}

/// `drgit drill`: where and how backups are restored to prove them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Drill {
    /// The directory with PostgreSQL's `postgres`, `pg_ctl` and `psql`
    /// (default: found on PATH, then /usr/lib/postgresql/<major>/bin).
    pub postgres_bin: Option<PathBuf>,
    /// Queries run on the restored database besides `select count(*) from pg_class`.
    pub pg_checks: Vec<String>,
    /// The user PostgreSQL and barman-cloud run as when drgit runs as root
    /// (PostgreSQL refuses root), through `runuser`.
    pub run_as: Option<String>,
    /// Where the throwaway data directories go (default: the system's temp dir).
    pub work_dir: Option<PathBuf>,
    /// How long a restore and its replay may take, in seconds.
    pub timeout_secs: u64,
}

impl Default for Drill {
    fn default() -> Self {
        Drill {
            postgres_bin: None,
            pg_checks: Vec::new(),
            run_as: None,
            work_dir: None,
            timeout_secs: 1800,
        }
    }
}

/// Where Argo CD runs and how long drgit waits for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArgoCd {
    pub namespace: String,
    /// The Application deploying the Cluster; default: the one whose
    /// source path holds the manifest.
    pub application: Option<String>,
    pub sync_timeout_secs: u64,
    pub poll_ms: u64,
    /// With self-heal on, how long to let Argo CD re-create a deleted
    /// Cluster by itself before drgit starts the sync, in seconds.
    pub self_heal_grace_secs: u64,
}

impl Default for ArgoCd {
    fn default() -> Self {
        ArgoCd {
            namespace: "argocd".into(),
            application: None,
            sync_timeout_secs: 1800,
            poll_ms: 2000,
            self_heal_grace_secs: 60,
        }
    }
}

/// What healthy backups look like (`drgit backups status`): the runbook's
/// daily schedules, 14-day bucket retention and 7-day CNPG catalog.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Expect {
    pub base_backup_hours: u64,
    pub etcd_hours: u64,
    pub kanidm_hours: u64,
    /// Slack before a backup counts as late.
    pub grace_hours: u64,
    pub retention_days: u64,
    pub catalog_days: u64,
}

impl Default for Expect {
    fn default() -> Self {
        Expect {
            base_backup_hours: 24,
            etcd_hours: 24,
            kanidm_hours: 24,
            grace_hours: 6,
            retention_days: 14,
            catalog_days: 7,
        }
    }
}

/// The backup store (one bucket for every backup kind).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backup {
    /// `s3://bucket/prefix/`, `file:///abs/dir`, or a directory relative to
    /// the config file. The PostgreSQL catalog is `<url>cnpg/<serverName>/`.
    pub url: String,
    /// The S3 endpoint (empty: AWS itself).
    pub endpoint: String,
    pub region: String,
    /// Path-style addressing; default: on for IP-address and localhost endpoints.
    pub path_style: Option<bool>,
    /// How many requests to the store may be in flight at once.
    pub parallel_requests: usize,
}

impl Default for Backup {
    fn default() -> Self {
        Backup {
            url: "s3://home-cluster-backup/".into(),
            endpoint: "https://b0832b1c20a7cada26af0ac45862ce80.r2.cloudflarestorage.com".into(),
            region: "auto".into(),
            path_style: None,
            parallel_requests: crate::backup::DEFAULT_PARALLEL_REQUESTS,
        }
    }
}

/// The CNPG Cluster and how recovery names things.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Postgres {
    /// The Cluster manifest, relative to the repository root.
    pub manifest: PathBuf,
    pub cluster: String,
    pub namespace: String,
    /// The external cluster the recovery reads the old lineage through.
    pub external_cluster: String,
    /// The prefix under the backup URL where barman writes.
    pub catalog_prefix: String,
    pub credentials_secret: String,
    pub access_key_id_key: String,
    pub secret_access_key_key: String,
    /// How long `pg-revert --when-healthy` waits for the recovered Cluster, in seconds.
    pub recovery_timeout_secs: u64,
    /// Its first poll interval in milliseconds (it backs off to 30 s).
    pub health_poll_ms: u64,
    /// How long `--wait` waits for the segment `pg_switch_wal()` completed
    /// to be archived, in seconds.
    pub archive_timeout_secs: u64,
    /// How long `--wait` waits, after the fence annotation, until
    /// PostgreSQL is down in every instance, in seconds. CNPG asks for a
    /// fast shutdown that may take up to the Cluster's
    /// `spec.maxSwitchoverDelay` (3600 s by default) before an immediate
    /// one (cloudnative-pg v1.30.0 pkg/management/postgres/instance.go).
    pub fence_timeout_secs: u64,
}

impl Default for Postgres {
    fn default() -> Self {
        Postgres {
            manifest: "manifests/database/shared-pg.yaml".into(),
            cluster: "shared-pg".into(),
            namespace: "database".into(),
            external_cluster: "shared-pg-backup".into(),
            catalog_prefix: "cnpg/".into(),
            credentials_secret: "r2-backup-credentials".into(),
            access_key_id_key: "credential".into(),
            secret_access_key_key: "password".into(),
            recovery_timeout_secs: 6 * 3600,
            health_poll_ms: 5000,
            archive_timeout_secs: 300,
            fence_timeout_secs: 600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kanidm {
    pub namespace: String,
    pub statefulset: String,
    pub statefulset_manifest: PathBuf,
    pub repl_configmap: PathBuf,
    pub server_configmap: String,
    pub image: String,
    pub backup_prefix: String,
    /// The server config inside the pods, for kanidmd's admin commands.
    pub server_config_path: String,
    /// The Argo CD Application deploying Kanidm; default: the one whose
    /// source path holds the ConfigMap manifest.
    pub application: Option<String>,
    /// How long the rolling restart after a change may take, in seconds.
    pub rollout_timeout_secs: u64,
    /// kanidm-restore: the image of the pod that copies the backup onto
    /// the volume (needs `sh`, `head`, `mv`, `sha256sum`).
    pub helper_image: String,
    /// kanidm-restore: how long a short-lived pod may take to start.
    pub restore_timeout_secs: u64,
    /// kanidm-restore: how long `kanidmd database restore` may run.
    pub restore_run_timeout_secs: u64,
}

impl Default for Kanidm {
    fn default() -> Self {
        Kanidm {
            namespace: "kanidm".into(),
            statefulset: "kanidm".into(),
            statefulset_manifest: "manifests/kanidm/statefulset.yaml".into(),
            repl_configmap: "manifests/kanidm/configmap-repl.yaml".into(),
            server_configmap: "kanidm-server-config".into(),
            image: "docker.io/kanidm/server:1.9.1".into(),
            backup_prefix: "kanidm/".into(),
            server_config_path: "/config/server.toml".into(),
            application: None,
            rollout_timeout_secs: 900,
            helper_image: "docker.io/library/busybox:1.37".into(),
            restore_timeout_secs: 600,
            restore_run_timeout_secs: 7200,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Talos {
    pub control_plane: Vec<String>,
    pub workers: Vec<String>,
    pub etcd_prefix: String,
    /// The user's talosctl (matched to their cluster).
    pub talosctl: String,
    pub talosconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// The word that confirms the reset; default `reset`.
    pub cluster_name: Option<String>,
    /// After the reset: how long the nodes may take to wait for a bootstrap.
    pub reboot_timeout_secs: u64,
    /// After the bootstrap: how long the other control planes may take to join.
    pub join_timeout_secs: u64,
    pub poll_ms: u64,
    /// etcd-recover: the second look at etcd, this long after the first,
    /// before it is taken for lost.
    pub settle_secs: u64,
    /// How long one talosctl call may take before it is killed.
    pub call_timeout_secs: u64,
    /// How long the bootstrap's upload of the snapshot may take.
    pub upload_timeout_secs: u64,
    /// After the bootstrap: how long the first node's restore may take
    /// before its etcd runs.
    pub restore_timeout_secs: u64,
    /// `-e` for talosctl: the control planes' own addresses. Talos's VIP
    /// must not be an endpoint (it follows etcd, and goes with it).
    pub endpoints: Vec<String>,
}

impl Default for Talos {
    fn default() -> Self {
        Talos {
            control_plane: vec![
                "192.168.0.230".into(),
                "192.168.0.231".into(),
                "192.168.0.232".into(),
            ],
            workers: vec![
                "192.168.0.200".into(),
                "192.168.0.201".into(),
                "192.168.0.202".into(),
            ],
            etcd_prefix: "etcd/".into(),
            talosctl: "talosctl".into(),
            talosconfig: None,
            context: None,
            cluster_name: None,
            reboot_timeout_secs: 900,
            join_timeout_secs: 900,
            poll_ms: 5000,
            settle_secs: 30,
            call_timeout_secs: 60,
            upload_timeout_secs: 900,
            restore_timeout_secs: 900,
            endpoints: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Git {
    /// Local-only branches are `<branch_prefix><scenario>-<UTC timestamp>`;
    /// published ones `<branch_prefix><scenario>-<cluster>`, one per intent.
    pub branch_prefix: String,
    /// The remote drgit pushes to.
    pub remote: String,
    /// The branch Argo CD tracks (`--direct` commits there, pull requests
    /// target it); default: the forge's default branch, else the remote's HEAD.
    pub tracked_branch: Option<String>,
}

impl Default for Git {
    fn default() -> Self {
        Git {
            branch_prefix: "drgit/".into(),
            remote: "origin".into(),
            tracked_branch: None,
        }
    }
}

/// The forge pull requests are opened on (GitHub or GitHub Enterprise).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Forge {
    /// REST API root: `https://api.github.com`, or `https://HOST/api/v3`.
    pub api_url: String,
    /// `owner/name`; default: read from the remote URL.
    pub repo: Option<String>,
    /// Labels for every drgit pull request; the scenario's own is added.
    pub labels: Vec<String>,
    pub reviewers: Vec<String>,
    pub assignees: Vec<String>,
    pub draft: bool,
    /// GitHub App authentication (all three), instead of a token.
    pub app_id: Option<u64>,
    pub app_key_file: Option<PathBuf>,
    pub installation_id: Option<u64>,
    /// How long `--wait-merge` waits, in seconds.
    pub merge_timeout_secs: u64,
    /// `--wait-merge`'s first poll interval in milliseconds (it backs off to 30 s).
    pub merge_poll_ms: u64,
}

impl Default for Forge {
    fn default() -> Self {
        Forge {
            api_url: "https://api.github.com".into(),
            repo: None,
            labels: vec!["disaster-recovery".into()],
            reviewers: Vec::new(),
            assignees: Vec::new(),
            draft: false,
            app_id: None,
            app_key_file: None,
            installation_id: None,
            merge_timeout_secs: 24 * 3600,
            merge_poll_ms: 2000,
        }
    }
}

/// Where the backups are, resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreUrl {
    S3 { bucket: String, prefix: String },
    Local(PathBuf),
}

impl Config {
    /// Loads `path` when given, else `<repo>/drgit.toml` when it exists,
    /// else the defaults. Returns the directory relative paths resolve from.
    pub fn load(explicit: Option<&Path>, repo: &Path) -> Result<(Config, PathBuf), ConfigError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => {
                let p = repo.join("drgit.toml");
                if !p.exists() {
                    return Ok((Config::default(), repo.to_path_buf()));
                }
                p
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let config = Config::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.clone(),
            message,
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| repo.to_path_buf());
        Ok((config, base))
    }

    /// Parses TOML text; the error names the offending key and line.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| {
            let msg = e.message().trim().to_string();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}: {msg}")
                }
                None => msg,
            }
        })
    }
}

/// Resolves a backup URL: `s3://bucket/prefix/`, `file:///abs`, or a path
/// relative to `base` (the config file's directory).
pub fn parse_store_url(url: &str, base: &Path) -> Result<StoreUrl, ConfigError> {
    let bad = || ConfigError::BadUrl {
        what: "backup url".into(),
        url: url.into(),
    };
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad());
        }
        let mut prefix = prefix.to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        return Ok(StoreUrl::S3 {
            bucket: bucket.into(),
            prefix,
        });
    }
    if let Some(rest) = url.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err(bad());
        }
        return Ok(StoreUrl::Local(PathBuf::from(rest)));
    }
    if url.is_empty() || url.contains("://") {
        return Err(bad());
    }
    let p = Path::new(url);
    Ok(StoreUrl::Local(if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_file_keeps_defaults() {
        let c = Config::parse("[backup]\nurl = \"../store\"\n").unwrap();
        assert_eq!(c.backup.url, "../store");
        assert_eq!(c.backup.region, "auto");
        assert_eq!(c.postgres.cluster, "shared-pg");
        assert_eq!(c.postgres.external_cluster, "shared-pg-backup");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[backup]\nurl = \"x\"\nregoin = \"auto\"\n").unwrap_err();
        assert!(err.contains("regoin"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        let err = Config::parse("[postgress]\n").unwrap_err();
        assert!(err.contains("postgress"), "{err}");
    }

    #[test]
    fn store_urls() {
        let base = Path::new("/repo");
        assert_eq!(
            parse_store_url("s3://home-cluster-backup/", base).unwrap(),
            StoreUrl::S3 {
                bucket: "home-cluster-backup".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            parse_store_url("s3://b/a/b", base).unwrap(),
            StoreUrl::S3 {
                bucket: "b".into(),
                prefix: "a/b/".into()
            }
        );
        assert_eq!(
            parse_store_url("file:///x/y", base).unwrap(),
            StoreUrl::Local("/x/y".into())
        );
        assert_eq!(
            parse_store_url("../s", base).unwrap(),
            StoreUrl::Local("/repo/../s".into())
        );
        assert!(parse_store_url("http://x", base).is_err());
        assert!(parse_store_url("s3:///x", base).is_err());
    }
}
