//! `drgit pg-recover`: the runbook's PostgreSQL recovery, Git part.
//!
//! 1. Read the Cluster manifest and learn which backup lineage it writes.
//! 2. Read that lineage's barman catalog and refuse a target time outside
//!    the recoverable window, before anything is touched.
//! 3. Rewrite the manifest: `bootstrap.initdb` → `bootstrap.recovery` from
//!    an external cluster that reads the old lineage, and — the runbook's
//!    missing step — the Cluster's own backups moved to a new, empty
//!    lineage so CNPG does not stop archiving with "Expected empty archive".
//! 4. Show the diff and the plan; a dry run ends here.
//! 5. Commit: on a local branch `drgit/pg-recover-<UTC timestamp>`, or on
//!    drgit's branch for this Cluster and push it (`--push`), open its pull
//!    request (`--pr`), or commit on the tracked branch (`--push --direct`).

use serde::Serialize;

use super::publish::{self, AutoRevert, Mode, Options};
use super::{
    CatalogSummary, Context, Outcome, diffstat, preflight, read_cluster_manifest, unified_diff,
};
use crate::backup::barman::Window;
use crate::backup::{BackupStore, barman::Catalog};
use crate::error::Error;
use crate::manifest::cnpg::{self, Bootstrap, RecoverySpec};
use crate::timearg;

const COMMIT_TEMPLATE: &str = include_str!("../../templates/pg-recover.commit.j2");
const PR_TEMPLATE: &str = include_str!("../../templates/pg-recover.pr.md.j2");

#[derive(Debug, Clone, Default)]
pub struct Args {
    /// As typed; None recovers to the end of the archived WAL.
    pub target_time: Option<String>,
    pub timezone: Option<String>,
    pub dry_run: bool,
    pub publish: Options,
    /// Record that the revert PR should follow once the Cluster is healthy.
    pub auto_revert: bool,
    /// Then drive the cluster steps until the recovery is done.
    pub wait: bool,
    /// Confirm destructive steps without asking.
    pub yes: bool,
}

/// What the templates see.
#[derive(Serialize)]
struct Texts<'a> {
    cluster: &'a str,
    namespace: &'a str,
    manifest: &'a str,
    target: Option<&'a str>,
    base_backup: Option<&'a str>,
    location: &'a str,
    lineage: &'a str,
    windows: &'a [Window],
    changes: &'a [String],
    next_steps: &'a [String],
    diffstat: &'a str,
    auto_revert: bool,
}

pub fn run(ctx: &Context, args: &Args) -> Result<Outcome, Error> {
    let pg = &ctx.config.postgres;
    let mode = args.publish.mode;
    if args.wait && !matches!(mode, Mode::PullRequest | Mode::Direct) {
        return Err(Error::WaitNeedsPublish);
    }

    // A commit needs a clean manifest, a usable branch and remote: check
    // before any other work.
    let repo = if args.dry_run {
        None
    } else {
        Some(preflight(ctx, &pg.manifest)?)
    };
    let branch = publish::branch_for(ctx, "pg-recover", mode, repo.as_ref())?;
    if let Some(repo) = &repo {
        publish::preflight(ctx, repo, mode, &branch)?;
    }

    // Runbook step 1: the Cluster manifest.
    let manifest = read_cluster_manifest(ctx)?;
    let cluster = &manifest.cluster;

    // The target is checked against the lineage the recovery reads.
    let store = ctx.open_store()?;
    let lineage = cluster.recovery_lineage().to_string();
    let catalog = Catalog::read(
        store.as_ref(),
        &format!("{}{lineage}/", pg.catalog_prefix),
        &lineage,
    )?;
    let windows = catalog.usable_windows()?;
    let (target, base_backup) = match &args.target_time {
        Some(t) => {
            let t = timearg::parse_target_time(t, args.timezone.as_deref(), ctx.now)?;
            let check = catalog.check_target(t)?;
            (Some(t.to_string()), Some(check.backup))
        }
        None => {
            let newest = catalog
                .backups
                .iter()
                .filter(|b| b.status == "DONE")
                .max_by_key(|b| b.end_time)
                .map(|b| b.id.clone());
            (None, newest)
        }
    };

    // Runbook step 3 [fix]: a new, empty lineage for the recovered Cluster.
    let new_lineage = match cluster.bootstrap {
        Bootstrap::Initdb | Bootstrap::Default => Some(fresh_lineage(
            store.as_ref(),
            &pg.catalog_prefix,
            &cluster.server_name,
        )?),
        Bootstrap::Recovery { .. } => None,
    };

    // A Cluster already in recovery keeps its source; only the target changes.
    let source = match &cluster.bootstrap {
        Bootstrap::Recovery { source, .. } => source.as_str(),
        Bootstrap::Initdb | Bootstrap::Default => pg.external_cluster.as_str(),
    };
    let spec = RecoverySpec {
        source,
        target_time: target.as_deref(),
        new_server_name: new_lineage.as_deref().unwrap_or(&cluster.server_name),
    };
    let rewrite =
        cnpg::rewrite_for_recovery(&manifest.text, manifest.stream.clone(), cluster, &spec)
            .map_err(|e| manifest.error(e))?;
    let diff = unified_diff(&manifest.display(), &manifest.text, &rewrite.text);

    let plan = next_steps(ctx, &manifest.display(), &branch, mode);
    let mut outcome = Outcome {
        scenario: "pg-recover",
        manifest: manifest.display(),
        cluster: cluster.name.clone(),
        dry_run: args.dry_run,
        catalog: Some(CatalogSummary {
            location: catalog.location.clone(),
            lineage: lineage.clone(),
            base_backups: catalog.backups.len(),
            wal_segments: catalog.segments.len(),
            windows: windows.clone(),
            gaps: catalog.gaps(),
        }),
        target_time: target.clone(),
        base_backup: base_backup.clone(),
        new_lineage,
        changes: rewrite.changes.clone(),
        diff,
        plan: plan.clone(),
        branch: None,
        commit: None,
        published: None,
        wait: None,
        cluster_state: None,
    };
    let Some(repo) = repo else {
        return Ok(outcome);
    };

    // Auto-revert, once asked for this Cluster, stays on for its later runs.
    let auto_revert =
        args.auto_revert || AutoRevert::load(&repo).is_some_and(|i| i.cluster == cluster.name);
    let stat = diffstat(&manifest.text, &rewrite.text);
    let texts = Texts {
        cluster: &cluster.name,
        namespace: &pg.namespace,
        manifest: &manifest.display(),
        target: target.as_deref(),
        base_backup: base_backup.as_deref(),
        location: &catalog.location,
        lineage: &lineage,
        windows: &windows,
        changes: &rewrite.changes,
        next_steps: &plan[1..],
        diffstat: &stat,
        auto_revert,
    };
    let (message, title, body) =
        publish::render_texts(ctx, "pg-recover", COMMIT_TEMPLATE, PR_TEMPLATE, &texts)?;
    let (committed, published, pr) = publish::commit_and_publish(
        ctx,
        &repo,
        &args.publish,
        &branch,
        &manifest,
        &rewrite.text,
        (&message, &title, &body),
        "pg-recover",
    )?;
    outcome.branch = Some(committed.branch.clone());
    outcome.commit = Some(committed.commit.to_string());
    if auto_revert && let Some((_, pr)) = &pr {
        AutoRevert {
            cluster: cluster.name.clone(),
            recovery_pr: pr.number,
            recovery_url: pr.html_url.clone(),
            branch: branch.clone(),
            recorded_at: ctx.now.to_string(),
        }
        .save(&repo)?;
    }
    if args.wait {
        let params = super::pg_wait::Params {
            cluster: cluster.name.clone(),
            namespace: pg.namespace.clone(),
            manifest_dir: manifest
                .rel_path
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            pr: published.pull_request.as_ref().map(|p| p.number),
            commit: (mode == Mode::Direct).then(|| committed.commit.to_string()),
            auto_revert,
        };
        outcome.published = Some(published);
        outcome.wait = Some(super::pg_wait::start(ctx, &repo, params, args.yes)?);
        return Ok(outcome);
    }
    outcome.published = Some(published);
    Ok(outcome)
}

/// The first lineage after `current` with no objects in the store yet.
fn fresh_lineage(store: &dyn BackupStore, prefix: &str, current: &str) -> Result<String, Error> {
    let mut name = cnpg::next_server_name(current);
    for _ in 0..100 {
        if store.list(&format!("{prefix}{name}/"))?.is_empty() {
            return Ok(name);
        }
        tracing::info!(lineage = %name, "already has objects; trying the next name");
        name = cnpg::next_server_name(&name);
    }
    Err(Error::NoFreeLineage {
        after: current.to_string(),
        location: format!("{}{prefix}", store.describe()),
    })
}

/// What happens after the commit, in the runbook's corrected order.
fn next_steps(ctx: &Context, manifest: &str, branch: &str, mode: Mode) -> Vec<String> {
    let pg = &ctx.config.postgres;
    let first = match mode {
        Mode::Local => {
            format!("Commit the change on branch `{branch}` (nothing leaves this machine).")
        }
        Mode::Push => format!("Commit the change on branch `{branch}` and push it."),
        Mode::PullRequest => {
            format!("Commit the change on branch `{branch}`, push it and open its pull request.")
        }
        Mode::Direct => format!(
            "Commit the change on `{branch}` and push it: Argo CD applies it without review."
        ),
    };
    let merge = match mode {
        Mode::Local => {
            format!("Push `{branch}` and merge it into the branch Argo CD tracks, after review.")
        }
        Mode::Push => format!("Open a pull request for `{branch}` and merge it, after review."),
        Mode::PullRequest => "Review and merge the pull request.".to_string(),
        Mode::Direct => "Nothing to merge: the commit is on the branch Argo CD tracks.".to_string(),
    };
    vec![
        first,
        merge,
        format!("Wait until the Argo CD Application that owns {manifest} reports Synced at that commit."),
        format!(
            "Only then delete the Cluster (`kubectl delete cluster {} -n {}`): Argo CD re-creates it in recovery mode. Deleting before the sync lets auto-sync re-apply initdb and bring up an empty database.",
            pg.cluster, pg.namespace
        ),
        format!(
            "Watch Job `{}-1-full-recovery` until the Cluster's phase is \"Cluster in healthy state\", Ready is True and every instance is ready.",
            pg.cluster
        ),
        "Run `drgit pg-revert` to put `bootstrap` back to `initdb` (CNPG ignores it on a running Cluster; it keeps a later re-creation from recovering stale data).".into(),
    ]
}
