//! `drgit pg-revert`: after a healthy recovery, `bootstrap` back to `initdb`.
//!
//! 1. Read the Cluster manifest; it must be in recovery.
//! 2. Find the `initdb` block it had before, in the file's Git history, and
//!    put it back byte for byte (comments included).
//! 3. Remove the external cluster only the recovery read. The backups stay
//!    on the new lineage: the old one belongs to the lost cluster.
//! 4. Show the diff; a dry run ends here, else commit on a new branch.

use serde::Serialize;

use super::{
    Context, Outcome, commit_change, preflight, read_cluster_manifest, render_template,
    unified_diff,
};
use crate::error::Error;
use crate::gitops::WorkRepo;
use crate::manifest::cnpg;

const COMMIT_TEMPLATE: &str = include_str!("../../templates/pg-revert.commit.j2");

#[derive(Debug, Clone, Default)]
pub struct Args {
    pub dry_run: bool,
}

pub fn run(ctx: &Context, args: &Args) -> Result<Outcome, Error> {
    let branch = ctx.branch_name("pg-revert");
    let pg = &ctx.config.postgres;
    let repo = if args.dry_run {
        WorkRepo::open(&ctx.repo_dir)?
    } else {
        preflight(ctx, &pg.manifest, &branch)?
    };

    let manifest = read_cluster_manifest(ctx)?;
    let cluster = &manifest.cluster;

    // The initdb settings the Cluster had before the recovery.
    let initdb = repo
        .file_versions(&manifest.rel_path)?
        .iter()
        .find_map(|(_, bytes)| {
            cnpg::bootstrap_origin(&String::from_utf8_lossy(bytes), &cluster.name)
        })
        .ok_or_else(|| Error::NoInitdbHistory {
            file: manifest.display(),
        })?;

    let rewrite =
        cnpg::rewrite_for_revert(&manifest.text, manifest.stream.clone(), cluster, &initdb)
            .map_err(|e| manifest.error(e))?;
    let diff = unified_diff(&manifest.display(), &manifest.text, &rewrite.text);
    let mut outcome = Outcome {
        scenario: "pg-revert",
        manifest: manifest.display(),
        cluster: cluster.name.clone(),
        dry_run: args.dry_run,
        catalog: None,
        target_time: None,
        base_backup: None,
        new_lineage: None,
        changes: rewrite.changes.clone(),
        diff,
        plan: vec![
            format!("Commit the change on branch `{branch}` (nothing leaves this machine)."),
            format!(
                "Push `{branch}` and merge it; Argo CD applies it without touching the running database."
            ),
        ],
        branch: None,
        commit: None,
    };
    if args.dry_run {
        return Ok(outcome);
    }

    #[derive(Serialize)]
    struct Msg<'a> {
        cluster: &'a str,
        changes: &'a [String],
    }
    let message = render_template(
        "pg-revert.commit.j2",
        COMMIT_TEMPLATE,
        Msg {
            cluster: &cluster.name,
            changes: &rewrite.changes,
        },
    )?;
    let commit = commit_change(&repo, &manifest, &rewrite.text, &branch, &message)?;
    outcome.branch = Some(branch);
    outcome.commit = Some(commit);
    Ok(outcome)
}
