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

use super::pg_revert::AutoRevert;
use super::publish::{self, Mode, Options};
use super::{
    CatalogSummary, Context, Detail, Outcome, PgRecoverDetail, preflight, read_cluster_manifest,
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
    /// RFC 3339, UTC.
    target: Option<&'a str>,
    /// As written into the manifest (PostgreSQL's form).
    recovery_target_time: Option<&'a str>,
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

    // A run that was interrupted holds what it fenced and deleted: it is
    // resumed, not started over.
    if args.wait
        && let Ok(repo) = crate::gitops::WorkRepo::open(&ctx.repo_dir)
    {
        crate::plan::Journal::refuse_if_running(&repo.git_dir())?;
    }

    // A commit needs a clean manifest, a usable branch and remote: check
    // before any other work.
    let repo = if args.dry_run {
        None
    } else {
        Some(preflight(ctx, &pg.manifest)?)
    };
    let branch = publish::branch_for(ctx, "pg-recover", &pg.cluster, mode, repo.as_ref())?;
    if let Some(repo) = &repo {
        publish::preflight(ctx, repo, mode, &branch)?;
    }

    // Runbook step 1: the Cluster manifest.
    let manifest = read_cluster_manifest(ctx)?;
    let cluster = &manifest.cluster;

    // The target is checked against the lineage the recovery reads, in
    // the bucket CNPG will read it from.
    super::check_backup_location(ctx, &manifest)?;
    let store = ctx.open_store()?;
    let lineage = cluster.recovery_lineage().to_string();
    // The new lineage's first candidate name is looked at in the same
    // crawl as the catalog (a round trip less across the ocean).
    let first_candidate = match cluster.bootstrap {
        Bootstrap::Initdb | Bootstrap::Default => cnpg::next_server_name(&cluster.server_name),
        Bootstrap::Recovery { .. } => cluster.server_name.clone(),
    };
    let (catalog, first_empty) = Catalog::read_probing(
        store.as_ref(),
        &format!("{}{lineage}/", pg.catalog_prefix),
        &lineage,
        &format!("{}{first_candidate}/", pg.catalog_prefix),
    )?;
    let windows = catalog.usable_windows()?;
    // [fix] PostgreSQL stops only at a commit: the window ends at the
    // newest one in the archived WAL. The target is truncated to
    // PostgreSQL's microseconds before it is checked, so that what is
    // written is what was checked.
    let (target, base_backup) = choose_target(
        ctx,
        &catalog,
        args.target_time.as_deref(),
        args.timezone.as_deref(),
    )?;
    let base_backup = Some(base_backup);
    let written_target = target.map(timearg::postgres);
    let target_text = target.map(|t| t.to_string());

    // Runbook step 3 [fix]: a new, EMPTY lineage for the recovered
    // Cluster. A re-run keeps the one it chose before only while it is
    // still empty (an old primary that archived into it meanwhile makes
    // CNPG fail with "Expected empty archive").
    let fresh = fresh_lineage(
        store.as_ref(),
        &pg.catalog_prefix,
        &first_candidate,
        first_empty,
    )?;
    let new_lineage = match cluster.bootstrap {
        Bootstrap::Initdb | Bootstrap::Default => Some(fresh),
        Bootstrap::Recovery { .. } => (fresh != cluster.server_name).then_some(fresh),
    };

    // A Cluster already in recovery keeps its source; only the target changes.
    let source = match &cluster.bootstrap {
        Bootstrap::Recovery { source, .. } => source.as_str(),
        Bootstrap::Initdb | Bootstrap::Default => pg.external_cluster.as_str(),
    };
    let spec = RecoverySpec {
        source,
        target_time: written_target.as_deref(),
        backup_id: base_backup.as_deref(),
        new_server_name: new_lineage.as_deref().unwrap_or(&cluster.server_name),
    };
    let rewrite =
        cnpg::rewrite_for_recovery(&manifest.text, manifest.stream.clone(), cluster, &spec)
            .map_err(|e| manifest.error(e))?;
    let change = publish::ChangeSet::of_manifest(
        &manifest,
        &rewrite.text,
        rewrite.changes.clone(),
        "pg-recover",
        &pg.cluster,
    );
    let diff = change.diff();

    let plan = next_steps(
        ctx,
        &manifest.display(),
        &branch,
        mode,
        new_lineage.as_deref().unwrap_or(&cluster.server_name),
    );
    let mut outcome = Outcome {
        scenario: "pg-recover",
        manifest: manifest.display(),
        dry_run: args.dry_run,
        changes: rewrite.changes.clone(),
        diff,
        plan: plan.clone(),
        branch: None,
        commit: None,
        published: None,
        wait: None,
        detail: Detail::PgRecover(PgRecoverDetail {
            cluster: cluster.name.clone(),
            catalog: CatalogSummary {
                location: catalog.location.clone(),
                lineage: lineage.clone(),
                base_backups: catalog.backups.len(),
                wal_segments: catalog.segments.len(),
                windows: windows.clone(),
                gaps: catalog.gaps(),
                chain_ends: catalog.chain_ends.clone(),
            },
            target_time: target_text.clone(),
            recovery_target_time: written_target.clone(),
            base_backup: base_backup.clone(),
            new_lineage: new_lineage.clone(),
        }),
    };
    let Some(repo) = repo else {
        return Ok(outcome);
    };

    // Auto-revert, once asked for this Cluster, stays on for its later runs.
    let auto_revert =
        args.auto_revert || AutoRevert::load(&repo).is_some_and(|i| i.cluster == cluster.name);
    let stat = change.diffstat();
    let texts = Texts {
        cluster: &cluster.name,
        namespace: &pg.namespace,
        manifest: &manifest.display(),
        target: target_text.as_deref(),
        recovery_target_time: written_target.as_deref(),
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
    // With `--direct --wait` the push is a step of the plan, after the
    // old Cluster is fenced: the push is what Argo CD applies.
    let deferred = args.wait && mode == Mode::Direct;
    let (committed, published, pr) = if deferred {
        let committed = publish::commit(&repo, mode, &branch, &change, &message)?;
        (committed, publish::Published::default(), None)
    } else {
        publish::commit_and_publish(
            ctx,
            &repo,
            &args.publish,
            &branch,
            &change,
            (&message, &title, &body),
        )?
    };
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
            manifest: manifest.rel_path.clone(),
            new_lineage: new_lineage
                .clone()
                .unwrap_or_else(|| cluster.server_name.clone()),
            pr: published.pull_request.as_ref().map(|p| p.number),
            commit: (mode == Mode::Direct).then(|| committed.commit.to_string()),
            direct_branch: deferred.then(|| branch.clone()),
            auto_revert,
        };
        outcome.published = Some(published);
        outcome.wait = Some(super::pg_wait::start(ctx, &repo, params, args.yes)?);
        return Ok(outcome);
    }
    outcome.published = Some(published);
    Ok(outcome)
}

/// The target (truncated to PostgreSQL's microseconds, checked against the
/// window) and the base backup it is reached from; without a target, the
/// newest restorable backup and the end of the archived WAL.
pub fn choose_target(
    ctx: &Context,
    catalog: &Catalog,
    target_time: Option<&str>,
    timezone: Option<&str>,
) -> Result<(Option<jiff::Timestamp>, String), Error> {
    match target_time {
        Some(t) => {
            let t = timearg::to_micros(timearg::parse_target_time(t, timezone, ctx.now)?);
            let check = catalog.check_target(t)?;
            Ok((Some(t), check.backup))
        }
        None => {
            let newest = catalog
                .newest_restorable()
                .ok_or_else(|| catalog.usable_windows().err())
                .map_err(|e| match e {
                    Some(e) => Error::from(e),
                    None => Error::Catalog(crate::backup::barman::CatalogError::Unusable {
                        location: catalog.location.clone(),
                        detail: "no base backup's WAL chain reaches the newest archived segment"
                            .into(),
                    }),
                })?;
            Ok((None, newest))
        }
    }
}

/// The first lineage from `first` on with no objects in the store yet
/// (`first_empty`: `first` was seen empty already). One level is listed
/// per name: a lineage in use has `base/` or `wals/` there.
pub fn fresh_lineage(
    store: &dyn BackupStore,
    prefix: &str,
    first: &str,
    first_empty: bool,
) -> Result<String, Error> {
    let mut name = first.to_string();
    for i in 0..100 {
        let empty = (i == 0 && first_empty) || {
            let (dirs, objects) = store.list_level(&format!("{prefix}{name}/"))?;
            dirs.is_empty() && objects.is_empty()
        };
        if empty {
            return Ok(name);
        }
        tracing::info!(lineage = %name, "already has objects; trying the next name");
        name = cnpg::next_server_name(&name);
    }
    Err(Error::NoFreeLineage {
        after: first.to_string(),
        location: format!("{}{prefix}", store.describe()),
    })
}

/// What happens after the commit, in the runbook's corrected order.
fn next_steps(
    ctx: &Context,
    manifest: &str,
    branch: &str,
    mode: Mode,
    lineage: &str,
) -> Vec<String> {
    let pg = &ctx.config.postgres;
    let (cluster, ns) = (&pg.cluster, &pg.namespace);
    let first = match mode {
        Mode::Local => {
            format!("Commit the change on branch `{branch}` (nothing leaves this machine).")
        }
        Mode::Push => format!("Commit the change on branch `{branch}` and push it."),
        Mode::PullRequest => {
            format!("Commit the change on branch `{branch}`, push it and open its pull request.")
        }
        Mode::Direct => format!(
            "Commit the change on `{branch}`; it is pushed only once the old Cluster is fenced (below)."
        ),
    };
    let merge = match mode {
        Mode::Local => {
            format!("Push `{branch}` and merge it into the branch Argo CD tracks, after review.")
        }
        Mode::Push => format!("Open a pull request for `{branch}` and merge it, after review."),
        Mode::PullRequest => "Review and merge the pull request.".to_string(),
        Mode::Direct => {
            format!("Push `{branch}`: Argo CD applies it without review.")
        }
    };
    vec![
        first,
        format!(
            "Where the old primary still runs, switch WAL (`select pg_switch_wal()` in pod `status.currentPrimary` of Cluster {ns}/{cluster}) and wait until that segment is archived: the newest commits reach the bucket."
        ),
        format!(
            "Fence the old Cluster (annotation `cnpg.io/fencedInstances: '[\"*\"]'`): PostgreSQL stops, so it cannot archive into the new lineage `{lineage}` once Argo CD applies the change (a running primary archives under the live spec's serverName)."
        ),
        merge,
        format!(
            "Wait until the Argo CD Application that owns {manifest} reports Synced at a revision that contains that commit and holds the same manifest."
        ),
        format!(
            "Check that the lineage `{lineage}` is still empty, then delete the Cluster (`kubectl delete cluster {cluster} -n {ns}`) and note its uid. Deleting before the sync lets auto-sync re-apply initdb and bring up an empty database."
        ),
        "Without Argo CD self-heal, start a sync (`argocd app sync`): Argo CD does not re-create a deleted resource at an already-synced revision by itself.".into(),
        format!(
            "Watch the re-created Cluster (a new uid) and Job `{cluster}-1-full-recovery` until the phase is \"Cluster in healthy state\", Ready is True, every instance is ready and the Job is complete."
        ),
        format!(
            "Take an on-demand Backup of {cluster} and wait for its ContinuousArchiving condition: the new lineage is recoverable at once, not only after the next scheduled backup."
        ),
        "Run `drgit pg-revert` to put `bootstrap` back to `initdb` (CNPG ignores it on a running Cluster; it keeps a later re-creation from recovering stale data).".into(),
    ]
}
