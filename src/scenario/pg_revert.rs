//! `drgit pg-revert`: after a healthy recovery, `bootstrap` back to `initdb`.
//!
//! 1. Read the Cluster manifest; it must be in recovery.
//! 2. Find how it bootstrapped before, in the file's Git history, and put
//!    that back byte for byte (comments included).
//! 3. Remove the external cluster only the recovery read. The backups stay
//!    on the new lineage: the old one belongs to the lost cluster.
//! 4. Show the diff; a dry run ends here. Commit, and publish as asked; a
//!    pull request links back to the recovery's when auto-revert recorded it.

use serde::{Deserialize, Serialize};

use super::publish::{self, Mode, Options};
use super::{Context, Detail, Outcome, PgRevertDetail, preflight, read_cluster_manifest};

use crate::cluster::Kube;
use crate::error::Error;
use crate::gitops::WorkRepo;
use crate::manifest::cnpg;

const COMMIT_TEMPLATE: &str = include_str!("../../templates/pg-revert.commit.j2");
const PR_TEMPLATE: &str = include_str!("../../templates/pg-revert.pr.md.j2");

#[derive(Debug, Clone, Default)]
pub struct Args {
    pub dry_run: bool,
    pub publish: Options,
    /// Wait until the recovered Cluster is healthy before anything else.
    pub when_healthy: bool,
}

#[derive(Serialize)]
struct Texts<'a> {
    cluster: &'a str,
    namespace: &'a str,
    manifest: &'a str,
    changes: &'a [String],
    diffstat: &'a str,
    recovery_pr: Option<u64>,
}

pub fn run(ctx: &Context, args: &Args) -> Result<Outcome, Error> {
    let pg = &ctx.config.postgres;
    let mode = args.publish.mode;

    // Never revert while the recovery runs: merged before the re-creation,
    // the revert would have Argo CD bring the Cluster back empty (initdb).
    // The Cluster a `--wait` run deleted (its uid): its status, frozen
    // while it terminates, is no recovery.
    let cluster_state = if args.when_healthy {
        let kube = Kube::connect(ctx.kubeconfig.as_deref(), ctx.kube_context.as_deref())?;
        let old_uid = WorkRepo::open(&ctx.repo_dir)
            .ok()
            .and_then(|r| super::pg_wait::deleted_uid(&r));
        Some(super::pg_wait::watch_recovery(
            ctx,
            &kube,
            old_uid.as_deref(),
            crate::plan::stop_flag(),
        )?)
    } else {
        None
    };

    let repo = if args.dry_run {
        WorkRepo::open(&ctx.repo_dir)?
    } else {
        preflight(ctx, &pg.manifest)?
    };
    let branch = publish::branch_for(ctx, "pg-revert", &pg.cluster, mode, Some(&repo))?;
    if !args.dry_run {
        publish::preflight(ctx, &repo, mode, &branch)?;
    }

    let manifest = read_cluster_manifest(ctx)?;
    let cluster = &manifest.cluster;

    // How the Cluster bootstrapped before the recovery.
    let origin = repo
        .file_versions(&manifest.rel_path)?
        .iter()
        .find_map(|(_, bytes)| {
            cnpg::bootstrap_origin(&String::from_utf8_lossy(bytes), &cluster.name)
        })
        .ok_or_else(|| Error::NoInitdbHistory {
            file: manifest.display(),
        })?;

    let rewrite =
        cnpg::rewrite_for_revert(&manifest.text, manifest.stream.clone(), cluster, &origin)
            .map_err(|e| manifest.error(e))?;
    let change = publish::ChangeSet::of_manifest(
        &manifest,
        &rewrite.text,
        rewrite.changes.clone(),
        "pg-revert",
        &pg.cluster,
    );
    let diff = change.diff();
    let first = match mode {
        Mode::Local => {
            format!("Commit the change on branch `{branch}` (nothing leaves this machine).")
        }
        Mode::Push => format!("Commit the change on branch `{branch}` and push it."),
        Mode::PullRequest => {
            format!("Commit the change on branch `{branch}`, push it and open its pull request.")
        }
        Mode::Direct => format!("Commit the change on `{branch}` and push it."),
    };
    let mut outcome = Outcome {
        scenario: "pg-revert",
        manifest: manifest.display(),
        dry_run: args.dry_run,
        changes: rewrite.changes.clone(),
        diff,
        plan: vec![
            first,
            if args.when_healthy {
                "Merge it; Argo CD applies it without touching the running database.".into()
            } else {
                "Merge it only once the recovered Cluster is healthy (`--when-healthy` checks): merged before the re-creation, it would bring the Cluster back empty.".into()
            },
        ],
        branch: None,
        commit: None,
        published: None,
        wait: None,
        detail: Detail::PgRevert(PgRevertDetail {
            cluster: cluster.name.clone(),
            cluster_state,
        }),
    };
    if args.dry_run {
        return Ok(outcome);
    }

    let intent = AutoRevert::load(&repo).filter(|i| i.cluster == cluster.name);
    let stat = change.diffstat();
    let texts = Texts {
        cluster: &cluster.name,
        namespace: &pg.namespace,
        manifest: &manifest.display(),
        changes: &rewrite.changes,
        diffstat: &stat,
        recovery_pr: intent.as_ref().map(|i| i.recovery_pr),
    };
    let (message, title, body) =
        publish::render_texts(ctx, "pg-revert", COMMIT_TEMPLATE, PR_TEMPLATE, &texts)?;
    let (committed, published, pr) = publish::commit_and_publish(
        ctx,
        &repo,
        &args.publish,
        &branch,
        &change,
        (&message, &title, &body),
    )?;
    outcome.branch = Some(committed.branch.clone());
    outcome.commit = Some(committed.commit.to_string());
    if let (Some(intent), Some((gh, pr))) = (&intent, &pr) {
        gh.comment(
            intent.recovery_pr,
            &format!(
                "The recovery is done: #{} puts `bootstrap` back to `initdb` ({}).",
                pr.number, pr.html_url
            ),
        )?;
        AutoRevert::clear(&repo);
    }
    outcome.published = Some(published);
    Ok(outcome)
}

/// "Once healthy, open the revert PR": recorded by `pg-recover --pr
/// --auto-revert`, used by `pg-revert --pr`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AutoRevert {
    pub cluster: String,
    pub recovery_pr: u64,
    pub recovery_url: String,
    pub branch: String,
    pub recorded_at: String,
}

fn intent_path(repo: &WorkRepo) -> std::path::PathBuf {
    repo.git_dir().join("drgit/auto-revert.json")
}

impl AutoRevert {
    pub fn save(&self, repo: &WorkRepo) -> Result<(), Error> {
        let path = intent_path(repo);
        let io = |e: std::io::Error| Error::StateFile {
            path: path.display().to_string(),
            source: Box::new(e),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        crate::manifest::write_atomic(&path, text.as_bytes()).map_err(io)
    }

    pub fn load(repo: &WorkRepo) -> Option<AutoRevert> {
        let text = std::fs::read_to_string(intent_path(repo)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn clear(repo: &WorkRepo) {
        let _ = std::fs::remove_file(intent_path(repo));
    }
}
