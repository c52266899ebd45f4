//! `drgit pg-recover … --wait`: the runbook's imperative part, in the
//! corrected order, each step checked and journaled.
//!
//! 1. The recovery commit is on the branch Argo CD tracks (the pull
//!    request is merged, or the commit was pushed there directly).
//! 2. Argo CD refreshes, and the Application that deploys the manifest
//!    reports Synced at that commit.
//! 3. Only then the Cluster is deleted (confirmed; refused unless Argo CD is
//!    synced at the commit and the live Cluster already has the recovery
//!    spec): Argo CD re-creates it from Git in recovery mode.
//! 4. The recovery is watched until the Cluster is healthy (phase "Cluster
//!    in healthy state", Ready True, every instance ready); CNPG's own
//!    failure texts stop it with the next action.
//! 5. With auto-revert recorded, the revert pull request is opened.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Context;
use super::publish::AutoRevert;
use crate::cluster::{ClusterError, Kube};
use crate::error::Error;
use crate::gitops::WorkRepo;
use crate::gitops::forge::GitHub;
use crate::plan::{self, Journal, JournalData, Status, Step, StepRecord};

/// What the wait needs to know; kept in the journal for `drgit resume`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Params {
    pub cluster: String,
    pub namespace: String,
    pub manifest_dir: String,
    /// The recovery pull request, or None when the commit went in directly.
    pub pr: Option<u64>,
    pub commit: Option<String>,
    pub auto_revert: bool,
}

struct Env<'a> {
    ctx: &'a Context,
    kube: Kube,
    gh: Option<GitHub>,
    params: Params,
}

fn poll(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

struct Merged<'a>(&'a Env<'a>);
impl Step for Merged<'_> {
    fn name(&self) -> &'static str {
        "merged"
    }
    fn describe(&self) -> String {
        match self.0.params.pr {
            Some(n) => {
                format!("Wait until pull request #{n} is merged into the branch Argo CD tracks")
            }
            None => "The recovery commit is on the branch Argo CD tracks".into(),
        }
    }
    fn run(&self, _: &Journal, stop: &AtomicBool) -> Result<Value, Error> {
        let e = self.0;
        let commit = match (e.params.pr, &e.gh, &e.params.commit) {
            (Some(n), Some(gh), _) => gh
                .wait_merged(
                    n,
                    Duration::from_secs(e.ctx.config.forge.merge_timeout_secs),
                    poll(e.ctx.config.forge.merge_poll_ms),
                    stop,
                )
                .map_err(|err| match err {
                    crate::gitops::forge::ForgeError::Interrupted { .. } => Error::Interrupted {
                        step: "merged".into(),
                    },
                    other => other.into(),
                })?,
            (_, _, Some(c)) => c.clone(),
            _ => return Err(Error::WaitNeedsPublish),
        };
        Ok(json!({ "commit": commit }))
    }
}

fn merged_commit(j: &Journal) -> String {
    j.output("merged")
        .and_then(|o| o["commit"].as_str())
        .unwrap_or_default()
        .to_string()
}

struct Synced<'a>(&'a Env<'a>);
impl Step for Synced<'_> {
    fn name(&self) -> &'static str {
        "argocd-synced"
    }
    fn describe(&self) -> String {
        format!(
            "Ask Argo CD for a hard refresh and wait until the Application deploying {} is Synced at the merge commit",
            self.0.params.manifest_dir
        )
    }
    fn run(&self, j: &Journal, stop: &AtomicBool) -> Result<Value, Error> {
        let e = self.0;
        let a = &e.ctx.config.argocd;
        let commit = merged_commit(j);
        let app = e.kube.find_application(
            &a.namespace,
            a.application.as_deref(),
            &e.params.manifest_dir,
        )?;
        e.kube.refresh_application(&a.namespace, &app.name)?;
        let start = Instant::now();
        loop {
            let now = e.kube.application(&a.namespace, &app.name)?;
            if now.synced_at(&commit) {
                return Ok(json!({ "application": app.name }));
            }
            if start.elapsed() > Duration::from_secs(a.sync_timeout_secs) {
                return Err(Error::NotSynced {
                    application: app.name,
                    commit,
                    status: format!("{:?} at {:?}", now.sync_status, now.revision),
                });
            }
            plan::sleep(poll(a.poll_ms), stop, self.name())?;
        }
    }
}

struct Delete<'a>(&'a Env<'a>);
impl Step for Delete<'_> {
    fn name(&self) -> &'static str {
        "delete-cluster"
    }
    fn describe(&self) -> String {
        format!(
            "Delete the CNPG Cluster {}/{} (its pods and volumes go with it); Argo CD re-creates it from Git in recovery mode",
            self.0.params.namespace, self.0.params.cluster
        )
    }
    fn destructive(&self) -> bool {
        true
    }
    fn check(&self, j: &Journal) -> Result<(), Error> {
        let e = self.0;
        let a = &e.ctx.config.argocd;
        let commit = merged_commit(j);
        let app_name = j
            .output("argocd-synced")
            .and_then(|o| o["application"].as_str())
            .unwrap_or_default();
        let app = e.kube.application(&a.namespace, app_name)?;
        if !app.synced_at(&commit) {
            return Err(Error::RefuseDelete {
                reason: format!(
                    "Argo CD Application {app_name} is {} at {}, not Synced at the recovery commit {commit}; deleting now could bring the Cluster back from the old manifest, empty",
                    app.sync_status.as_deref().unwrap_or("unknown"),
                    app.revision.as_deref().unwrap_or("no revision")
                ),
            });
        }
        match e.kube.cnpg_cluster(&e.params.namespace, &e.params.cluster)? {
            Some(s) if s.recovering_spec => Ok(()),
            Some(_) => Err(Error::RefuseDelete {
                reason: "the live Cluster still bootstraps with initdb: Argo CD has not applied the recovery manifest".into(),
            }),
            None => Err(Error::RefuseDelete {
                reason: "the Cluster does not exist (already deleted?); nothing to delete".into(),
            }),
        }
    }
    fn run(&self, _: &Journal, _stop: &AtomicBool) -> Result<Value, Error> {
        let e = self.0;
        e.kube
            .delete_cnpg_cluster(&e.params.namespace, &e.params.cluster)?;
        Ok(json!({ "deleted_at": jiff::Timestamp::now().to_string() }))
    }
    fn verify(&self, _: &Journal, _: &Value) -> Result<(), Error> {
        // Gone, on its way out (foreground deletion), or already back from
        // Argo CD in recovery mode: anything but the old Cluster.
        let e = self.0;
        match e
            .kube
            .cnpg_cluster(&e.params.namespace, &e.params.cluster)?
        {
            Some(s) if s.healthy() && !s.terminating && !s.recovering_spec => {
                Err(Error::RefuseDelete {
                    reason: "the delete was accepted but the old Cluster is still there".into(),
                })
            }
            _ => Ok(()),
        }
    }
}

struct Recovered<'a>(&'a Env<'a>);
impl Step for Recovered<'_> {
    fn name(&self) -> &'static str {
        "recovered"
    }
    fn describe(&self) -> String {
        format!(
            "Watch the recovery (Job {}-1-full-recovery) until the Cluster is healthy",
            self.0.params.cluster
        )
    }
    fn run(&self, _: &Journal, stop: &AtomicBool) -> Result<Value, Error> {
        let e = self.0;
        let pg = &e.ctx.config.postgres;
        let start = Instant::now();
        loop {
            let state = e
                .kube
                .cnpg_cluster(&e.params.namespace, &e.params.cluster)?;
            if let Some(s) = &state {
                if let Some(failure) = s.failure() {
                    return Err(ClusterError::RecoveryFailed {
                        namespace: e.params.namespace.clone(),
                        name: e.params.cluster.clone(),
                        text: failure,
                    }
                    .into());
                }
                if s.healthy() && s.recovering_spec {
                    return Ok(serde_json::to_value(s).unwrap_or_default());
                }
            }
            // The recovery Job and the pods tell what the Cluster's phase does not.
            let job = e
                .kube
                .recovery_job(&e.params.namespace, &e.params.cluster)?;
            if let Some(j) = &job
                && j.active == 0
                && j.succeeded == 0
                && j.failed > 0
            {
                return Err(ClusterError::RecoveryFailed {
                    namespace: e.params.namespace.clone(),
                    name: e.params.cluster.clone(),
                    text: format!(
                        "Job {} failed{}",
                        j.name,
                        j.failed_message
                            .as_ref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    ),
                }
                .into());
            }
            let pods = e
                .kube
                .cluster_pods(&e.params.namespace, &e.params.cluster)?;
            let seen = format!(
                "{}{}{}",
                state
                    .as_ref()
                    .map(|s| s.describe())
                    .unwrap_or_else(|| "not re-created yet".into()),
                job.map(|j| format!(
                    "; job {}: {} active, {} succeeded",
                    j.name, j.active, j.succeeded
                ))
                .unwrap_or_default(),
                if pods.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; pods {}",
                        pods.iter()
                            .map(|(n, p)| format!("{n}={p}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    )
                }
            );
            crate::progress(&format!("[{:>4}s] {seen}", start.elapsed().as_secs()));
            if start.elapsed() > Duration::from_secs(pg.recovery_timeout_secs) {
                return Err(ClusterError::Timeout {
                    namespace: e.params.namespace.clone(),
                    name: e.params.cluster.clone(),
                    waited: start.elapsed(),
                    last: seen,
                }
                .into());
            }
            plan::sleep(poll(pg.health_poll_ms), stop, self.name())?;
        }
    }
}

struct RevertPr<'a>(&'a Env<'a>);
impl Step for RevertPr<'_> {
    fn name(&self) -> &'static str {
        "revert-pr"
    }
    fn describe(&self) -> String {
        "Open the pull request that puts bootstrap back to initdb (auto-revert)".into()
    }
    fn run(&self, _: &Journal, _stop: &AtomicBool) -> Result<Value, Error> {
        let e = self.0;
        let repo = WorkRepo::open(&e.ctx.repo_dir)?;
        // The revert starts from what was merged, not from the local branch.
        let tracked = match &e.ctx.config.git.tracked_branch {
            Some(b) => b.clone(),
            None => match &e.gh {
                Some(gh) => gh.default_branch()?,
                None => "main".into(),
            },
        };
        repo.switch_to_remote_branch(
            &e.ctx.config.git.remote,
            &tracked,
            &e.ctx.config.postgres.manifest,
        )?;
        let outcome = super::pg_revert::run(
            e.ctx,
            &super::pg_revert::Args {
                dry_run: false,
                publish: super::publish::Options {
                    mode: super::publish::Mode::PullRequest,
                    ..Default::default()
                },
                when_healthy: false,
            },
        )?;
        Ok(serde_json::to_value(outcome.published).unwrap_or_default())
    }
}

/// Asks before a destructive step: `--yes`, or the cluster's name typed
/// at a terminal; without a terminal and without `--yes`, refuses.
fn confirm(yes: bool, cluster: &str) -> impl Fn(&str) -> Result<(), Error> + '_ {
    move |what: &str| {
        if yes {
            return Ok(());
        }
        if !std::io::stdin().is_terminal() {
            return Err(Error::NeedsConfirmation { what: what.into() });
        }
        eprint!("{what}.\nType the Cluster's name ({cluster}) to go ahead: ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        if line.trim() == cluster {
            Ok(())
        } else {
            Err(Error::NeedsConfirmation { what: what.into() })
        }
    }
}

/// Starts the wait after a published recovery.
pub fn start(ctx: &Context, repo: &WorkRepo, params: Params, yes: bool) -> Result<Value, Error> {
    let journal = Journal::create(
        &repo.git_dir(),
        JournalData {
            scenario: "pg-recover-wait".into(),
            started_at: jiff::Timestamp::now().to_string(),
            params: serde_json::to_value(&params).unwrap_or_default(),
            steps: Vec::new(),
        },
    )?;
    drive(ctx, journal, yes)
}

/// Goes on with a journaled wait (`drgit resume`).
pub fn resume(ctx: &Context, yes: bool) -> Result<Value, Error> {
    let repo = WorkRepo::open(&ctx.repo_dir)?;
    let journal = Journal::load(&repo.git_dir())?.ok_or(Error::NothingToResume)?;
    drive(ctx, journal, yes)
}

fn drive(ctx: &Context, mut journal: Journal, yes: bool) -> Result<Value, Error> {
    let params: Params =
        serde_json::from_value(journal.data.params.clone()).map_err(|e| Error::State {
            path: "journal".into(),
            detail: e.to_string(),
        })?;
    let kube = Kube::connect(ctx.kubeconfig.as_deref(), ctx.kube_context.as_deref())?;
    let repo = WorkRepo::open(&ctx.repo_dir)?;
    let gh = if params.pr.is_some() || params.auto_revert {
        Some(GitHub::connect(
            &ctx.config.forge,
            &repo.remote_url(&ctx.config.git.remote)?,
        )?)
    } else {
        None
    };
    let auto_revert =
        params.auto_revert || AutoRevert::load(&repo).is_some_and(|i| i.cluster == params.cluster);
    let cluster = params.cluster.clone();
    let env = Env {
        ctx,
        kube,
        gh,
        params,
    };
    let (merged, synced, delete, recovered, revert) = (
        Merged(&env),
        Synced(&env),
        Delete(&env),
        Recovered(&env),
        RevertPr(&env),
    );
    let mut steps: Vec<&dyn Step> = vec![&merged, &synced, &delete, &recovered];
    if auto_revert {
        steps.push(&revert);
    }
    if journal.data.steps.is_empty() {
        journal.data.steps = steps
            .iter()
            .map(|s| StepRecord {
                name: s.name().into(),
                description: s.describe(),
                status: Status::Pending,
                output: Value::Null,
                finished_at: None,
            })
            .collect();
        journal.save()?;
    }
    plan::execute(
        &steps,
        &mut journal,
        &confirm(yes, &cluster),
        plan::stop_flag(),
    )?;
    let summary = serde_json::to_value(&journal.data).unwrap_or_default();
    journal.close();
    Ok(summary)
}

/// The journal of the current or last run, for `drgit status`.
pub fn status(ctx: &Context) -> Result<Option<JournalData>, Error> {
    let repo = WorkRepo::open(&ctx.repo_dir)?;
    if let Some(j) = Journal::load(&repo.git_dir())? {
        return Ok(Some(j.data));
    }
    let done = Journal::path_in(&repo.git_dir()).with_file_name("journal.done.json");
    Ok(std::fs::read_to_string(done)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok()))
}
