//! The recovery scenarios, each written in the order of the runbook.
//!
//! This module holds what they share: the run context, reading the Cluster
//! manifest, the diff, and committing the change on a new branch. A scenario
//! returns an [`Outcome`] that `output` renders for people or as JSON.

pub mod delivery;
pub mod drill;
pub mod etcd_recover;
pub mod kanidm_recert;
pub mod kanidm_restore;
pub mod pg_recover;
pub mod pg_revert;
pub mod pg_wait;
pub mod publish;

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::Serialize;

use crate::backup::barman::{Gap, Window};
use crate::config::Config;
use crate::error::Error;
use crate::gitops::WorkRepo;
use crate::manifest::{ManifestError, cnpg, yaml};

/// The journaled plans `drgit resume` can go on with, by the scenario
/// name their journal records.
type Resume = fn(&Context, crate::plan::Journal, bool) -> Result<serde_json::Value, Error>;
const PLANS: &[(&str, Resume)] = &[
    (pg_wait::SCENARIO, pg_wait::resume),
    (kanidm_recert::SCENARIO, kanidm_recert::resume),
    (kanidm_restore::SCENARIO, kanidm_restore::resume),
    (etcd_recover::SCENARIO, etcd_recover::resume),
    (drill::SCENARIO, drill::resume),
    (drill::KANIDM_SCENARIO, drill::resume_kanidm),
];

/// `drgit resume`: the interrupted plan, whichever scenario it belongs to,
/// at its first unfinished step.
pub fn resume(ctx: &Context, yes: bool) -> Result<serde_json::Value, Error> {
    let repo = WorkRepo::open(&ctx.repo_dir)?;
    let journal = crate::plan::Journal::load(&repo.git_dir())?.ok_or(Error::NothingToResume)?;
    let scenario = journal.data.scenario.clone();
    let resume = PLANS
        .iter()
        .find(|(name, _)| *name == scenario)
        .map(|(_, f)| *f)
        .ok_or_else(|| Error::State {
            path: crate::plan::Journal::path_in(&repo.git_dir())
                .display()
                .to_string(),
            detail: format!("the journal is of `{scenario}`, which this drgit does not know"),
        })?;
    resume(ctx, journal, yes)
}

/// `drgit status`: the journal of the current run, else of the last one.
pub fn status(ctx: &Context) -> Result<Option<crate::plan::JournalData>, Error> {
    let repo = WorkRepo::open(&ctx.repo_dir)?;
    crate::plan::last_journal(&repo.git_dir())
}

/// Everything a scenario run needs to know about where it runs.
#[derive(Debug, Clone)]
pub struct Context {
    /// The GitOps working copy (`--repo`).
    pub repo_dir: PathBuf,
    pub config: Config,
    /// The configuration file read (None: the built-in defaults).
    pub config_file: Option<PathBuf>,
    /// Where relative paths in the config resolve from.
    pub config_base: PathBuf,
    /// `--backup-url`, else `[backup] url`.
    pub backup_url: String,
    pub now: Timestamp,
    /// `--kubeconfig` and `--context`, for the steps that talk to the cluster.
    pub kubeconfig: Option<PathBuf>,
    pub kube_context: Option<String>,
}

impl Context {
    pub fn new(
        repo_dir: &Path,
        config_file: Option<&Path>,
        backup_url: Option<&str>,
        now: Timestamp,
    ) -> Result<Context, Error> {
        let (config, config_base) = Config::load(config_file, repo_dir)?;
        let loaded = config_file
            .map(Path::to_path_buf)
            .or_else(|| Some(repo_dir.join("drgit.toml")).filter(|p| p.is_file()));
        // A --backup-url relative path is relative to where the user stands.
        let (backup_url, config_base) = match backup_url {
            Some(u) => (
                u.to_string(),
                std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            ),
            None => (config.backup.url.clone(), config_base),
        };
        Ok(Context {
            config_file: loaded,
            repo_dir: repo_dir.to_path_buf(),
            config,
            config_base,
            backup_url,
            now,
            kubeconfig: None,
            kube_context: None,
        })
    }

    /// Opens the backup store. For S3 without credentials of its own (no
    /// `AWS_ACCESS_KEY_ID`, `AWS_PROFILE` or `~/.aws/credentials`), the keys
    /// come from the cluster's Secret (`[postgres] credentials_secret`, keys
    /// `credential` and `password`) when the cluster can be reached. They
    /// are never printed.
    pub fn open_store(&self) -> Result<Box<dyn crate::backup::BackupStore>, Error> {
        self.open_store_with(self.s3_credentials())
    }

    /// Opens the backup store with credentials [`Context::s3_credentials`]
    /// gave already (read once for two users).
    pub fn open_store_with(
        &self,
        credentials: Option<(String, String)>,
    ) -> Result<Box<dyn crate::backup::BackupStore>, Error> {
        Ok(crate::backup::open(
            &self.backup_url,
            &self.config_base,
            &self.config.backup,
            credentials,
        )?)
    }

    /// The S3 keys from the cluster's Secret when the environment has none
    /// of its own (None: the AWS chain applies, or the store is local).
    pub fn s3_credentials(&self) -> Option<(String, String)> {
        let s3 = self.backup_url.starts_with("s3://");
        if s3 && !self.s3_credentials_are_own() {
            self.cluster_s3_credentials()
        } else {
            None
        }
    }

    /// Whether the environment has S3 keys of its own (then the cluster's
    /// Secret is not read).
    pub fn s3_credentials_are_own(&self) -> bool {
        std::env::var_os("AWS_ACCESS_KEY_ID").is_some()
            || std::env::var_os("AWS_PROFILE").is_some()
            || std::env::var_os("HOME")
                .is_some_and(|h| Path::new(&h).join(".aws/credentials").exists())
    }

    fn cluster_s3_credentials(&self) -> Option<(String, String)> {
        let pg = &self.config.postgres;
        let kube = match crate::cluster::Kube::connect(
            self.kubeconfig.as_deref(),
            self.kube_context.as_deref(),
        ) {
            Ok(k) => k,
            Err(e) => {
                tracing::debug!(%e, "no cluster to read S3 credentials from");
                return None;
            }
        };
        let read = |key: &str| kube.secret_value(&pg.namespace, &pg.credentials_secret, key);
        match (read(&pg.access_key_id_key), read(&pg.secret_access_key_key)) {
            (Ok(Some(id)), Ok(Some(secret))) => {
                tracing::info!(secret = %pg.credentials_secret, namespace = %pg.namespace, "S3 credentials from the cluster Secret");
                Some((id, secret))
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(%e, "cannot read the S3 credentials Secret");
                None
            }
            _ => None,
        }
    }

    /// `drgit/<scenario>-<UTC timestamp>`.
    pub fn branch_name(&self, scenario: &str) -> String {
        format!(
            "{}{scenario}-{}",
            self.config.git.branch_prefix,
            crate::timearg::compact(self.now)
        )
    }
}

/// The Cluster manifest as read from the working copy.
pub struct Manifest {
    /// Relative to the repository top, as configured.
    pub rel_path: PathBuf,
    pub text: String,
    pub stream: yaml::Stream,
    pub cluster: cnpg::Cluster,
}

impl Manifest {
    pub fn display(&self) -> String {
        self.rel_path.to_string_lossy().into_owned()
    }

    pub fn error(&self, source: ManifestError) -> Error {
        Error::Manifest {
            file: self.display(),
            source,
        }
    }
}

/// Reads the configured Cluster manifest and finds the Cluster in it.
pub fn read_cluster_manifest(ctx: &Context) -> Result<Manifest, Error> {
    let rel_path = ctx.config.postgres.manifest.clone();
    let file = rel_path.to_string_lossy().into_owned();
    let path = ctx.repo_dir.join(&rel_path);
    let text = std::fs::read_to_string(&path).map_err(|source| Error::ReadManifest {
        file: file.clone(),
        setting: "[postgres] manifest",
        source,
    })?;
    let err = |source| Error::Manifest {
        file: file.clone(),
        source,
    };
    let stream = yaml::parse(&text).map_err(err)?;
    let doc = cnpg::find_cluster(&stream, &ctx.config.postgres.cluster).map_err(err)?;
    let cluster = cnpg::inspect(&stream, doc).map_err(err)?;
    Ok(Manifest {
        rel_path,
        text,
        stream,
        cluster,
    })
}

/// A unified diff of one file, `a/`/`b/` prefixed like git's.
pub fn unified_diff(path: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string()
}

/// Renders a commit-message template from `templates/`.
pub fn render_template(name: &str, source: &str, ctx: impl Serialize) -> Result<String, Error> {
    let mut env = minijinja::Environment::new();
    env.add_template(name, source)
        .map_err(|e| Error::Template {
            name: name.into(),
            source: Box::new(e),
        })?;
    let mut text = env
        .get_template(name)
        .and_then(|t| t.render(minijinja::value::Serde(&ctx)))
        .map_err(|e| Error::Template {
            name: name.into(),
            source: Box::new(e),
        })?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// The catalog part of an outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogSummary {
    pub location: String,
    pub lineage: String,
    pub base_backups: usize,
    pub wal_segments: usize,
    pub windows: Vec<Window>,
    pub gaps: Vec<Gap>,
    /// Where each chain of WAL ends, and its last commit read from the WAL.
    pub chain_ends: Vec<crate::backup::barman::ChainEnd>,
}

/// What a scenario did (or, in a dry run, would do): what every scenario
/// shares, and its own detail.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub scenario: &'static str,
    /// The (first) file it changes.
    pub manifest: String,
    pub dry_run: bool,
    pub changes: Vec<String>,
    pub diff: String,
    pub plan: Vec<String>,
    pub branch: Option<String>,
    pub commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published: Option<publish::Published>,
    /// The journal of `--wait`: each step and what it produced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<serde_json::Value>,
    /// The scenario's own part, at the top level of the JSON.
    #[serde(flatten)]
    pub detail: Detail,
}

/// Each scenario's own part of an outcome.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Detail {
    PgRecover(PgRecoverDetail),
    PgRevert(PgRevertDetail),
    KanidmRecert(kanidm_recert::KanidmRecertDetail),
    KanidmRestore(kanidm_restore::KanidmRestoreDetail),
    EtcdRecover(etcd_recover::EtcdRecoverDetail),
}

impl Detail {
    /// What the scenario works on, for the report's first line.
    pub fn subject(&self) -> String {
        match self {
            Detail::PgRecover(d) => format!("Cluster `{}`", d.cluster),
            Detail::PgRevert(d) => format!("Cluster `{}`", d.cluster),
            Detail::KanidmRecert(d) => format!("pod `{}`", d.pod),
            Detail::KanidmRestore(d) => format!("StatefulSet `{}`", d.statefulset),
            Detail::EtcdRecover(d) => format!("etcd of {}", d.control_plane.join(", ")),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PgRecoverDetail {
    pub cluster: String,
    pub catalog: CatalogSummary,
    /// RFC 3339 UTC, or None for the end of the archived WAL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_time: Option<String>,
    /// The same instant as written into `recoveryTarget.targetTime`
    /// (PostgreSQL's form: `2026-11-24 09:00:00.000000+00`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_target_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_backup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_lineage: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PgRevertDetail {
    pub cluster: String,
    /// The live Cluster's state when it was checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_state: Option<crate::cluster::ClusterState>,
}

/// Refuses when the store drgit reads (`[backup] url` or `--backup-url`,
/// plus `[postgres] catalog_prefix`) is not where the manifest tells CNPG
/// to restore from: drgit would check one catalog and CNPG read another. A
/// local mirror (a directory) cannot be compared and is taken as the
/// bucket's copy; a path with a `${VAR}` (substituted later by Flux) is
/// not compared either.
pub fn check_backup_location(ctx: &Context, manifest: &Manifest) -> Result<(), Error> {
    use crate::manifest::cnpg::StoreRef;
    if !ctx.backup_url.starts_with("s3://") {
        return Ok(());
    }
    let (dest, field, file) = match &manifest.cluster.recovery_store {
        StoreRef::Path { path, field } => (path.clone(), format!("`{field}`"), manifest.display()),
        StoreRef::ObjectStore { name, field } => match find_object_store(ctx, manifest, name) {
            Some((file, dest)) => (
                dest,
                format!(
                    "`spec.configuration.destinationPath` of ObjectStore `{name}` (named by `{field}`)"
                ),
                file,
            ),
            None => {
                tracing::warn!(object_store = %name, "no ObjectStore manifest in the repository; the backup location is not cross-checked");
                return Ok(());
            }
        },
        StoreRef::Unknown => return Ok(()),
    };
    if dest.contains("${") {
        tracing::warn!(%dest, "destinationPath is substituted later; the backup location is not cross-checked");
        return Ok(());
    }
    let slash = |s: &str| format!("{}/", s.trim_end_matches('/'));
    let reads = format!(
        "{}{}",
        slash(&ctx.backup_url),
        ctx.config.postgres.catalog_prefix.trim_start_matches('/')
    );
    if slash(&dest) != slash(&reads) {
        return Err(Error::BackupLocation {
            file,
            field,
            destination: dest,
            reads: slash(&reads),
        });
    }
    Ok(())
}

/// The barman-cloud plugin's ObjectStore `name`: in the Cluster's own file
/// first, then in any YAML file of the repository.
fn find_object_store(ctx: &Context, manifest: &Manifest, name: &str) -> Option<(String, String)> {
    if let Some(d) = crate::manifest::cnpg::object_store_destination(&manifest.text, name) {
        return Some((manifest.display(), d));
    }
    let mut stack = vec![ctx.repo_dir.clone()];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).ok()?.flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == ".git") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                seen += 1;
                if seen > 20_000 {
                    return None;
                }
                let Ok(text) = std::fs::read_to_string(&path) else {
                    continue;
                };
                if !text.contains("ObjectStore") {
                    continue;
                }
                if let Some(d) = crate::manifest::cnpg::object_store_destination(&text, name) {
                    let rel = path
                        .strip_prefix(&ctx.repo_dir)
                        .unwrap_or(&path)
                        .display()
                        .to_string();
                    return Some((rel, d));
                }
            }
        }
    }
    None
}

/// The SHA-256 of a local file, read errors naming it.
pub fn sha256_file(path: &Path) -> Result<String, Error> {
    crate::backup::verify::sha256_file(path).map_err(|source| Error::ReadFile {
        file: path.display().to_string(),
        source,
    })
}

/// Where a plan keeps the files it downloads: `.git/drgit/<name>` of the
/// working copy, or (a dry run, no working copy used) a temporary
/// directory, kept alive by the returned guard.
pub fn work_dir(
    repo: Option<&WorkRepo>,
    name: &str,
) -> Result<(PathBuf, Option<tempfile::TempDir>), Error> {
    match repo {
        Some(r) => Ok((r.git_dir().join("drgit").join(name), None)),
        None => {
            let tmp = tempfile::tempdir().map_err(|source| Error::ReadFile {
                file: "a temporary directory".into(),
                source,
            })?;
            Ok((tmp.path().to_path_buf(), Some(tmp)))
        }
    }
}

/// Opens the working copy and checks that the manifest is committed and
/// clean, before any other work.
pub fn preflight(ctx: &Context, rel_path: &Path) -> Result<WorkRepo, Error> {
    let repo = WorkRepo::open(&ctx.repo_dir)?;
    repo.check_file_clean(rel_path)?;
    Ok(repo)
}
