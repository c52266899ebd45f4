//! Publishing a scenario's commit: push, open or update the pull request,
//! wait for the merge, and the auto-revert intent.
//!
//! Like the best-loved Git bots: one branch per intent
//! (`drgit/<scenario>-<key>`), never a second pull request for it (an
//! open one is updated, title and body only when they changed), our own
//! branch re-pushed only over the commit we pushed last (a lease), never
//! over someone else's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::Context;
use crate::error::Error;
use crate::gitops::forge::{ForgeError, GitHub, NewPr, PullRequest};
use crate::gitops::{Committed, GitError, Lease, Target, WorkRepo};

/// How far a change goes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Mode {
    /// A local branch `drgit/<scenario>-<timestamp>`; nothing leaves the machine.
    #[default]
    Local,
    /// Push drgit's branch for this intent.
    Push,
    /// Commit on the branch Argo CD tracks and push it (no review).
    Direct,
    /// Push drgit's branch and open (or update) its pull request.
    PullRequest,
}

/// Publishing options of a scenario run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub mode: Mode,
    pub draft: bool,
    pub wait_merge: bool,
}

/// The trailer every drgit commit carries: how drgit knows a branch is its own.
pub const TRAILER: &str = "Drgit-Scenario";

/// The pull request part of an outcome.
#[derive(Debug, Clone, Serialize)]
pub struct PrSummary {
    pub number: u64,
    pub url: String,
    /// `created`, `updated` or `unchanged`.
    pub action: &'static str,
}

/// What publishing did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Published {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pushed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PrSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merge_commit: Option<String>,
}

/// The branch a scenario commits on, and how: `key` names the intent
/// (the Cluster, the pod, …).
pub fn branch_for(
    ctx: &Context,
    scenario: &str,
    key: &str,
    mode: Mode,
    repo: Option<&WorkRepo>,
) -> Result<String, Error> {
    Ok(match mode {
        Mode::Local => ctx.branch_name(scenario),
        Mode::Push | Mode::PullRequest => {
            format!("{}{scenario}-{key}", ctx.config.git.branch_prefix)
        }
        Mode::Direct => repo
            .and_then(WorkRepo::current_branch)
            .ok_or(GitError::Detached)?,
    })
}

/// The commit target for a mode.
pub fn target(mode: Mode, branch: &str) -> Target<'_> {
    match mode {
        Mode::Local => Target::NewBranch(branch),
        Mode::Push | Mode::PullRequest => Target::OwnBranch(branch),
        Mode::Direct => Target::Head,
    }
}

/// Checks before any work that the commit and the push can happen.
pub fn preflight(ctx: &Context, repo: &WorkRepo, mode: Mode, branch: &str) -> Result<(), Error> {
    let remote = &ctx.config.git.remote;
    match mode {
        Mode::Local => {
            if repo.branch_exists(branch) {
                return Err(GitError::BranchExists {
                    branch: branch.into(),
                }
                .into());
            }
        }
        Mode::Push | Mode::PullRequest => {
            repo.remote_url(remote)?;
            // drgit's own branch may be moved; anyone else's may not.
            if let Some(tip) = repo.branch_commit(branch)
                && repo.current_branch().as_deref() != Some(branch)
                && !repo
                    .commit_message(tip)
                    .is_some_and(|m| m.contains(&format!("{TRAILER}:")))
            {
                return Err(Error::NotOurBranch {
                    branch: branch.into(),
                });
            }
        }
        Mode::Direct => {
            let tracked = tracked_branch(ctx, repo)?;
            if branch != tracked {
                return Err(Error::NotTrackedBranch {
                    branch: branch.into(),
                    tracked,
                });
            }
            let local = repo.branch_commit(branch);
            let found = repo.fetch_branch(remote, branch)?;
            if found != local {
                return Err(GitError::NotUpToDate {
                    branch: branch.into(),
                    remote: remote.clone(),
                    local: local.map(|o| o.to_string()).unwrap_or_default(),
                    found: found
                        .map(|o| o.to_string())
                        .unwrap_or_else(|| "no branch".into()),
                }
                .into());
            }
        }
    }
    Ok(())
}

/// The branch Argo CD tracks: configured, else the remote's HEAD.
fn tracked_branch(ctx: &Context, repo: &WorkRepo) -> Result<String, Error> {
    if let Some(b) = &ctx.config.git.tracked_branch {
        return Ok(b.clone());
    }
    Ok(repo
        .remote_default_branch(&ctx.config.git.remote)?
        .unwrap_or_else(|| "main".into()))
}

/// Pushes the committed branch and, for a pull request, opens or updates it.
pub fn publish(
    ctx: &Context,
    repo: &WorkRepo,
    opts: &Options,
    branch: &str,
    title: &str,
    body: &str,
    scenario_label: &str,
) -> PublishResult {
    let remote = &ctx.config.git.remote;
    let mut out = Published::default();
    match opts.mode {
        Mode::Local => return Ok((out, None)),
        Mode::Direct => {
            let old = repo.git2_tracking(remote, branch);
            let lease = old.map(Lease::At).unwrap_or(Lease::Absent);
            let pushed = repo.push(remote, branch, branch, lease)?;
            out.pushed = Some(format!("{remote} {}", pushed.remote_ref));
            return Ok((out, None));
        }
        Mode::Push | Mode::PullRequest => {}
    }
    let lease = repo
        .git2_tracking(remote, branch)
        .map(Lease::At)
        .unwrap_or(Lease::Absent);
    let pushed = repo.push(remote, branch, branch, lease)?;
    out.pushed = Some(format!("{remote} {}", pushed.remote_ref));
    if opts.mode == Mode::Push {
        return Ok((out, None));
    }

    let gh = GitHub::connect(&ctx.config.forge, &repo.remote_url(remote)?)?;
    let base = match &ctx.config.git.tracked_branch {
        Some(b) => b.clone(),
        None => gh.default_branch()?,
    };
    let mut labels = ctx.config.forge.labels.clone();
    if !labels.iter().any(|l| l == scenario_label) {
        labels.push(scenario_label.to_string());
    }
    let pr = match gh.find_open_pr(branch)? {
        Some(existing) => {
            let new_title = (existing.title != title).then_some(title);
            let new_body = (existing.body.as_deref().unwrap_or("") != body).then_some(body);
            let (pr, action) = if new_title.is_some() || new_body.is_some() {
                (
                    gh.update_pr(existing.number, new_title, new_body)?,
                    "updated",
                )
            } else {
                (existing, "unchanged")
            };
            let missing: Vec<String> = labels
                .iter()
                .filter(|l| !pr.labels.iter().any(|have| have.name == **l))
                .cloned()
                .collect();
            if !missing.is_empty() {
                gh.add_labels(pr.number, &missing)?;
            }
            out.pull_request = Some(PrSummary {
                number: pr.number,
                url: pr.html_url.clone(),
                action,
            });
            pr
        }
        None => {
            let new = NewPr {
                title,
                body,
                head: branch,
                base: &base,
                draft: opts.draft || ctx.config.forge.draft,
            };
            let pr = match gh.create_pr(&new) {
                // Opened meanwhile (GitHub's 422 "A pull request already
                // exists"): update that one instead of failing.
                Err(ForgeError::Unprocessable { message, .. })
                    if message.contains("already exists") =>
                {
                    let existing = gh.find_open_pr(branch)?.ok_or(ForgeError::Unprocessable {
                        what: format!("opening a pull request from {branch}"),
                        message,
                    })?;
                    let pr = gh.update_pr(existing.number, Some(title), Some(body))?;
                    out.pull_request = Some(PrSummary {
                        number: pr.number,
                        url: pr.html_url.clone(),
                        action: "updated",
                    });
                    return finish(ctx, gh, pr, out, opts);
                }
                other => other?,
            };
            gh.add_labels(pr.number, &labels)?;
            if !ctx.config.forge.reviewers.is_empty() {
                gh.request_reviewers(pr.number, &ctx.config.forge.reviewers)?;
            }
            if !ctx.config.forge.assignees.is_empty() {
                gh.add_assignees(pr.number, &ctx.config.forge.assignees)?;
            }
            out.pull_request = Some(PrSummary {
                number: pr.number,
                url: pr.html_url.clone(),
                action: "created",
            });
            pr
        }
    };
    finish(ctx, gh, pr, out, opts)
}

/// The pull request a publish opened or updated, with the client that did.
pub type OpenedPr = Option<(GitHub, PullRequest)>;

type PublishResult = Result<(Published, OpenedPr), Error>;

/// Waits for the merge when asked.
fn finish(
    ctx: &Context,
    gh: GitHub,
    pr: PullRequest,
    mut out: Published,
    opts: &Options,
) -> PublishResult {
    if opts.wait_merge {
        let timeout = Duration::from_secs(ctx.config.forge.merge_timeout_secs);
        let first = Duration::from_millis(ctx.config.forge.merge_poll_ms);
        out.merge_commit =
            Some(gh.wait_merged(pr.number, timeout, first, crate::plan::stop_flag())?);
    }
    Ok((out, Some((gh, pr))))
}

/// Renders a scenario's commit message and pull-request title and body
/// (`<scenario>.commit.j2`, `<scenario>.pr.md.j2`; the repository's
/// `.drgit/templates/` overrides the pull request's).
pub fn render_texts(
    ctx: &Context,
    scenario: &str,
    commit_template: &'static str,
    pr_template: &'static str,
    data: impl Serialize,
) -> Result<(String, String, String), Error> {
    let commit_name = format!("{scenario}.commit.j2");
    let pr_name = format!("{scenario}.pr.md.j2");
    let message = super::render_template(&commit_name, commit_template, &data)?;
    let pr_source = template(&ctx.repo_dir, &pr_name, pr_template)?;
    let (title, body) = title_and_body(&super::render_template(&pr_name, &pr_source, &data)?);
    Ok((message, title, body))
}

/// One file a scenario changes: where (relative to the repository top),
/// and its text before and after.
#[derive(Debug, Clone)]
pub struct FileChange {
    pub path: PathBuf,
    pub old: String,
    pub new: String,
}

/// What a scenario changes in Git, whatever the scenario: the files, the
/// changes in words (for plans, commit messages and pull requests), the
/// label its pull request gets, and the key of its branch
/// (`drgit/<scenario>-<key>`: one branch per intent).
#[derive(Debug, Clone)]
pub struct ChangeSet {
    pub files: Vec<FileChange>,
    pub changes: Vec<String>,
    pub label: &'static str,
    pub branch_key: String,
}

impl ChangeSet {
    /// A change of one manifest, from its text as read to `new`.
    pub fn of_manifest(
        manifest: &super::Manifest,
        new: &str,
        changes: Vec<String>,
        label: &'static str,
        branch_key: &str,
    ) -> ChangeSet {
        ChangeSet {
            files: vec![FileChange {
                path: manifest.rel_path.clone(),
                old: manifest.text.clone(),
                new: new.to_string(),
            }],
            changes,
            label,
            branch_key: branch_key.to_string(),
        }
    }

    /// One unified diff of every file, `a/`/`b/` prefixed like git's.
    pub fn diff(&self) -> String {
        self.files
            .iter()
            .map(|f| super::unified_diff(&f.path.to_string_lossy(), &f.old, &f.new))
            .collect()
    }

    /// `+12 -7 lines` over every file, for pull-request bodies.
    pub fn diffstat(&self) -> String {
        let (mut add, mut del) = (0, 0);
        for f in &self.files {
            for c in similar::TextDiff::from_lines(&f.old, &f.new).iter_all_changes() {
                match c.tag() {
                    similar::ChangeTag::Insert => add += 1,
                    similar::ChangeTag::Delete => del += 1,
                    similar::ChangeTag::Equal => {}
                }
            }
        }
        format!("+{add} -{del} lines")
    }
}

/// Commits the change set where the mode says, then publishes it; a
/// failed publish undoes the local commit (every file).
pub fn commit_and_publish(
    ctx: &Context,
    repo: &WorkRepo,
    opts: &Options,
    branch: &str,
    change: &ChangeSet,
    (message, title, body): (&str, &str, &str),
) -> Result<(Committed, Published, OpenedPr), Error> {
    let committed = commit(repo, opts.mode, branch, change, message)?;
    let (published, pr) = publish(ctx, repo, opts, branch, title, body, change.label)
        .map_err(|e| undo_after(repo, &committed, change, e))?;
    Ok((committed, published, pr))
}

/// Commits the change set where the mode says, without publishing.
pub fn commit(
    repo: &WorkRepo,
    mode: Mode,
    branch: &str,
    change: &ChangeSet,
    message: &str,
) -> Result<Committed, Error> {
    let files: Vec<(&Path, &[u8])> = change
        .files
        .iter()
        .map(|f| (f.path.as_path(), f.new.as_bytes()))
        .collect();
    Ok(repo.commit_files(target(mode, branch), &files, message)?)
}

/// After a failed publish, undoes the local commit (HEAD, branch, files,
/// index) so that nothing is left half-done; a branch already pushed stays
/// on the remote and is re-used, under its lease, by the next run.
pub fn undo_after(repo: &WorkRepo, committed: &Committed, change: &ChangeSet, e: Error) -> Error {
    // Waiting for a merge that did not come: the pull request stands, and
    // so does the commit it was opened from.
    if matches!(
        e,
        Error::Forge(
            ForgeError::MergeTimeout { .. }
                | ForgeError::ClosedUnmerged { .. }
                | ForgeError::Interrupted { .. }
        )
    ) {
        return e;
    }
    let files: Vec<(&Path, &[u8])> = change
        .files
        .iter()
        .map(|f| (f.path.as_path(), f.old.as_bytes()))
        .collect();
    match repo.undo_commit(committed, &files) {
        Ok(()) => Error::PublishFailed {
            source: Box::new(e),
            undone: true,
        },
        Err(undo) => {
            tracing::error!(%undo, "could not undo the local commit");
            Error::PublishFailed {
                source: Box::new(e),
                undone: false,
            }
        }
    }
}

/// Reads a template: the repository's `.drgit/templates/<name>` when it
/// exists, else the built-in one.
pub fn template(repo_dir: &Path, name: &str, builtin: &'static str) -> Result<String, Error> {
    let own = repo_dir.join(".drgit/templates").join(name);
    match std::fs::read_to_string(&own) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(builtin.to_string()),
        Err(e) => Err(Error::Template {
            name: own.display().to_string(),
            source: Box::new(e),
        }),
    }
}

/// Splits a rendered pull-request template: first line the title, the rest the body.
pub fn title_and_body(rendered: &str) -> (String, String) {
    let (title, body) = rendered.split_once('\n').unwrap_or((rendered, ""));
    (
        title.trim_start_matches("# ").trim().to_string(),
        body.trim_start_matches('\n').trim_end().to_string() + "\n",
    )
}
