//! The GitOps half every `--wait` shares: the change reaches the branch
//! Argo CD tracks (its pull request merged, or the commit pushed), then the
//! Application that deploys it reports Synced at a revision that holds it.
//!
//! Argo CD's rules behind the second step (argoproj/argo-cd): a refresh
//! compares the tracked branch's head (controller/state.go), so the
//! revision it reports can be a LATER commit than ours; that counts when
//! it contains our commit and the files we changed are the same there (a
//! later commit that changed them again is an error, not a success).
//! `status.sync.revisions[]` is read too (multi-source Applications).
//!
//! A scenario's environment implements [`Delivers`]; the steps here are
//! then steps of its plan like its own.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Context;
use crate::cluster::argocd::SyncResource;
use crate::cluster::{AppState, Kube};
use crate::error::Error;
use crate::gitops::forge::{ForgeError, GitHub};
use crate::gitops::{Holds, WorkRepo};
use crate::plan::{self, Journal, Poll, Step};

/// Where the change is and how it travels; kept in a journal's params.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Target {
    /// The directory Argo CD deploys the files from (finds the Application).
    pub manifest_dir: String,
    /// The changed files, relative to the repository top.
    pub files: Vec<PathBuf>,
    /// The pull request, or None when the commit goes in directly.
    pub pr: Option<u64>,
    /// With `--direct`: the local commit on the tracked branch, pushed by
    /// the plan's `pushed` step.
    pub commit: Option<String>,
    pub direct_branch: Option<String>,
    /// The scenario whose commit this is (for the push's messages).
    pub scenario: String,
    /// The Application to wait for; None: the one whose source path holds
    /// `manifest_dir`.
    #[serde(default)]
    pub application: Option<String>,
}

/// Connected once per run: the cluster, the forge when there is a pull
/// request, the working copy, and the branch Argo CD tracks.
pub struct Delivery<'a> {
    pub ctx: &'a Context,
    pub kube: Kube,
    pub gh: Option<GitHub>,
    pub repo: WorkRepo,
    /// The branch Argo CD tracks.
    pub tracked: String,
    pub target: Target,
}

/// A plan environment that carries a [`Delivery`].
pub trait Delivers<'a> {
    fn delivery(&self) -> &Delivery<'a>;
}

impl<'a> Delivers<'a> for Delivery<'a> {
    fn delivery(&self) -> &Delivery<'a> {
        self
    }
}

pub fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// The longest pause between two looks at anything.
pub const MAX_POLL: Duration = Duration::from_secs(30);

pub fn value(v: impl Serialize) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Merged {
    pub commit: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Synced {
    pub application: String,
    pub revision: String,
    pub self_heal: bool,
}

impl<'a> Delivery<'a> {
    /// Connects what the plan needs; `forge` also when no pull request is
    /// awaited (a later step opens one).
    pub fn connect(ctx: &'a Context, target: Target, forge: bool) -> Result<Self, Error> {
        let kube = Kube::connect(ctx.kubeconfig.as_deref(), ctx.kube_context.as_deref())?;
        let repo = WorkRepo::open(&ctx.repo_dir)?;
        let gh = if target.pr.is_some() || forge {
            Some(GitHub::connect(
                &ctx.config.forge,
                &repo.remote_url(&ctx.config.git.remote)?,
            )?)
        } else {
            None
        };
        let tracked = match (&ctx.config.git.tracked_branch, &target.direct_branch, &gh) {
            (Some(b), _, _) => b.clone(),
            (None, Some(b), _) => b.clone(),
            (None, None, Some(gh)) => gh.default_branch()?,
            (None, None, None) => repo
                .remote_default_branch(&ctx.config.git.remote)?
                .unwrap_or_else(|| "main".into()),
        };
        Ok(Delivery {
            ctx,
            kube,
            gh,
            repo,
            tracked,
            target,
        })
    }

    /// The commit the `merged`/`pushed` step recorded.
    pub fn merged_commit(&self, j: &Journal) -> Result<String, Error> {
        let step = Merge {
            direct: self.target.direct_branch.is_some(),
        };
        Ok(
            j.output_as::<Merged>(<Merge as Step<Delivery>>::name(&step))?
                .commit,
        )
    }

    /// The first of Argo CD's revisions that contains `commit` with every
    /// changed file the same; the branch is fetched once when a revision
    /// is not known locally yet.
    pub fn holding_revision(&self, app: &AppState, commit: &str) -> Result<Option<String>, Error> {
        self.revision_holding(app, commit, &self.target.files)
    }

    /// `holding_revision` for these files.
    pub fn revision_holding(
        &self,
        app: &AppState,
        commit: &str,
        files: &[PathBuf],
    ) -> Result<Option<String>, Error> {
        let mut fetched = false;
        'revisions: for rev in &app.revisions {
            for file in files {
                let mut holds = self.repo.revision_holds(rev, commit, file)?;
                if holds == Holds::Unknown && !fetched {
                    self.repo
                        .fetch_branch(&self.ctx.config.git.remote, &self.tracked)?;
                    fetched = true;
                    holds = self.repo.revision_holds(rev, commit, file)?;
                }
                match holds {
                    Holds::Yes => {}
                    Holds::ManifestDiffers => {
                        return Err(Error::ManifestChangedSince {
                            application: app.name.clone(),
                            revision: rev.clone(),
                            commit: commit.into(),
                            manifest: file.display().to_string(),
                        });
                    }
                    Holds::NotContained | Holds::Unknown => continue 'revisions,
                }
            }
            return Ok(Some(rev.clone()));
        }
        Ok(None)
    }
}

/// How many times in all drgit starts a sync that keeps ending `Failed`
/// or `Error` (each with Argo CD's own retries inside).
pub const SYNC_ATTEMPTS: u32 = 3;

/// A sync drgit starts where Argo CD would not sync by itself, started
/// again when it ends `Failed` or `Error`, up to [`SYNC_ATTEMPTS`] times.
pub struct SyncDriver {
    revision: String,
    resources: Vec<SyncResource>,
    reason: &'static str,
    started: u32,
}

impl SyncDriver {
    /// A sync of `revision`, limited to `resources` when any, not started yet.
    pub fn new(revision: String, resources: Vec<SyncResource>, reason: &'static str) -> Self {
        SyncDriver {
            revision,
            resources,
            reason,
            started: 0,
        }
    }

    /// Whether drgit started a sync.
    pub fn started(&self) -> bool {
        self.started > 0
    }

    /// One look at the Application: starts the sync when none runs and
    /// drgit's last one (if any) ended without applying. A note for the
    /// wait's status line when it started one or one runs.
    pub fn poke(
        &mut self,
        kube: &Kube,
        namespace: &str,
        app: &AppState,
    ) -> Result<Option<String>, Error> {
        if app.operation_running {
            return Ok(Some(format!(
                "a sync of Argo CD Application {} runs",
                app.name
            )));
        }
        if self.started > 0 && !app.operation_failed() {
            return Ok(None);
        }
        if self.started >= SYNC_ATTEMPTS {
            return Err(Error::SyncFailed {
                application: app.name.clone(),
                phase: app.operation_phase.clone().unwrap_or_default(),
                attempts: self.started,
                message: app
                    .operation_message
                    .clone()
                    .unwrap_or_else(|| "no message".into()),
            });
        }
        let again = if self.started > 0 {
            format!(
                " again (the last ended {}: {})",
                app.operation_phase.as_deref().unwrap_or_default(),
                app.operation_message.as_deref().unwrap_or("no message")
            )
        } else {
            String::new()
        };
        kube.sync_application(namespace, app, &self.revision, &self.resources, self.reason)?;
        self.started += 1;
        Ok(Some(format!(
            "started a sync of Argo CD Application {} at {}{again}",
            app.name, self.revision
        )))
    }
}

/// The commit reaches the branch Argo CD tracks: its pull request merged,
/// or (`--direct`) pushed by this step.
pub struct Merge {
    /// `--direct`: this step pushes instead of waiting for a merge.
    pub direct: bool,
}

impl<'a, E: Delivers<'a>> Step<E> for Merge {
    fn name(&self) -> &'static str {
        if self.direct { "pushed" } else { "merged" }
    }
    fn describe(&self, e: &E) -> String {
        let t = &e.delivery().target;
        match (&t.pr, &t.direct_branch) {
            (Some(n), _) => {
                format!("Wait until pull request #{n} is merged into the branch Argo CD tracks")
            }
            (None, Some(b)) => {
                format!("Push the recovery commit on `{b}`, the branch Argo CD tracks")
            }
            (None, None) => "The recovery commit is on the branch Argo CD tracks".into(),
        }
    }
    fn run(&self, e: &E, _: &Journal, stop: &AtomicBool) -> Result<Value, Error> {
        let d = e.delivery();
        let t = &d.target;
        let commit = match (t.pr, &d.gh, &t.direct_branch, &t.commit) {
            (Some(n), Some(gh), _, _) => wait_for_merge(d, gh, n, "merged", stop)?,
            (None, _, Some(branch), Some(c)) => {
                super::publish::publish(
                    d.ctx,
                    &d.repo,
                    &super::publish::Options {
                        mode: super::publish::Mode::Direct,
                        ..Default::default()
                    },
                    branch,
                    "",
                    "",
                    &t.scenario,
                )?;
                c.clone()
            }
            (_, _, _, Some(c)) => c.clone(),
            _ => return Err(Error::WaitNeedsPublish),
        };
        Ok(value(Merged { commit }))
    }
}

fn wait_for_merge(
    d: &Delivery,
    gh: &GitHub,
    pr: u64,
    step: &str,
    stop: &AtomicBool,
) -> Result<String, Error> {
    gh.wait_merged(
        pr,
        Duration::from_secs(d.ctx.config.forge.merge_timeout_secs),
        ms(d.ctx.config.forge.merge_poll_ms),
        stop,
    )
    .map_err(|err| match err {
        ForgeError::Interrupted { .. } => Error::Interrupted { step: step.into() },
        other => other.into(),
    })
}

/// Argo CD, hard-refreshed, reports the Application Synced at a revision
/// holding the commit.
pub struct ArgoSynced;

impl ArgoSynced {
    pub fn name_str(&self) -> &'static str {
        "argocd-synced"
    }
}

impl<'a, E: Delivers<'a>> Step<E> for ArgoSynced {
    fn name(&self) -> &'static str {
        self.name_str()
    }
    fn describe(&self, e: &E) -> String {
        format!(
            "Ask Argo CD for a hard refresh and wait until the Application deploying {} is Synced at a revision that contains the recovery commit and holds the same manifest",
            e.delivery().target.manifest_dir
        )
    }
    fn run(&self, e: &E, j: &Journal, stop: &AtomicBool) -> Result<Value, Error> {
        let d = e.delivery();
        let commit = d.merged_commit(j)?;
        wait_synced(d, self.name_str(), &commit, &d.target.files, stop)
    }
}

/// Waits until the Application deploying the target's directory is Synced
/// at a revision holding `commit` with `files` the same.
fn wait_synced(
    d: &Delivery,
    step: &str,
    commit: &str,
    files: &[PathBuf],
    stop: &AtomicBool,
) -> Result<Value, Error> {
    let a = &d.ctx.config.argocd;
    let app = d.kube.find_application(
        &a.namespace,
        d.target.application.as_deref(),
        &d.target.manifest_dir,
    )?;
    d.kube.refresh_application(&a.namespace, &app.name)?;
    // Without automated sync nothing applies the change unless someone
    // starts a sync (argo-cd controller/appcontroller.go `autoSync`
    // returns at once): drgit does, at the revision that holds the commit.
    let mut driver: Option<SyncDriver> = None;
    let polled = plan::poll_until(
        step,
        Duration::from_secs(a.sync_timeout_secs),
        (ms(a.poll_ms), MAX_POLL),
        stop,
        |_| {
            let now = d.kube.application(&a.namespace, &app.name)?;
            let holding = d.revision_holding(&now, commit, files)?;
            if now.synced()
                && let Some(revision) = holding.clone()
            {
                return Ok(Poll::Ready(Synced {
                    application: now.name.clone(),
                    revision,
                    self_heal: now.self_heal,
                }));
            }
            let mut note = None;
            if !now.automated
                && let Some(revision) = holding
            {
                let drv = driver.get_or_insert_with(|| {
                    SyncDriver::new(
                        revision,
                        Vec::new(),
                        "apply the recovery change (the Application has no automated sync)",
                    )
                });
                note = drv.poke(&d.kube, &a.namespace, &now)?;
            }
            Ok(Poll::Waiting(format!(
                "Argo CD Application {}: {}{}",
                now.name,
                now.describe(),
                note.map(|n| format!("; {n}")).unwrap_or_default()
            )))
        },
    )?;
    match polled {
        Ok(s) => Ok(value(s)),
        Err(t) => Err(Error::NotSynced {
            application: app.name,
            commit: commit.to_string(),
            status: t.last,
        }),
    }
}

/// A change a step of the plan makes itself (kanidm-restore makes one per
/// stage): its commit, pull request and files, as that step records them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Change {
    pub commit: String,
    pub pr: Option<u64>,
    pub files: Vec<PathBuf>,
}

/// The names of one stage's steps: the step that makes the change (its
/// output a [`Change`]), then the merge and the sync of that change.
#[derive(Debug, Clone, Copy)]
pub struct Stage {
    pub change: &'static str,
    pub merged: &'static str,
    pub synced: &'static str,
}

/// A stage's change reaches the tracked branch (its pull request merged;
/// pushed already when there is none).
pub struct StagedMerge(pub Stage);

impl<'a, E: Delivers<'a>> Step<E> for StagedMerge {
    fn name(&self) -> &'static str {
        self.0.merged
    }
    fn describe(&self, _: &E) -> String {
        format!(
            "Wait until the change of step `{}` is on the branch Argo CD tracks (its pull request merged)",
            self.0.change
        )
    }
    fn run(&self, e: &E, j: &Journal, stop: &AtomicBool) -> Result<Value, Error> {
        let d = e.delivery();
        let change: Change = j.output_as(self.0.change)?;
        let commit = match (change.pr, &d.gh) {
            (Some(n), Some(gh)) => wait_for_merge(d, gh, n, self.0.merged, stop)?,
            (Some(_), None) => return Err(Error::WaitNeedsPublish),
            (None, _) => change.commit,
        };
        Ok(value(Merged { commit }))
    }
}

/// A stage's change synced by Argo CD.
pub struct StagedSync(pub Stage);

impl<'a, E: Delivers<'a>> Step<E> for StagedSync {
    fn name(&self) -> &'static str {
        self.0.synced
    }
    fn describe(&self, e: &E) -> String {
        format!(
            "Ask Argo CD for a hard refresh and wait until the Application deploying {} is Synced at a revision holding the change of step `{}`",
            e.delivery().target.manifest_dir,
            self.0.change
        )
    }
    fn run(&self, e: &E, j: &Journal, stop: &AtomicBool) -> Result<Value, Error> {
        let d = e.delivery();
        let change: Change = j.output_as(self.0.change)?;
        let merged: Merged = j.output_as(self.0.merged)?;
        wait_synced(d, self.0.synced, &merged.commit, &change.files, stop)
    }
}
