//! A git2 working copy.
//!
//! [`WorkRepo::commit_on_new_branch`] does what `git switch -c BRANCH`, an
//! edit of one file, `git add FILE` and `git commit` would do, but builds the
//! commit from HEAD's tree plus that one file, so other staged or modified
//! paths are neither committed nor touched. It refuses when the file itself
//! has uncommitted changes, and undoes the branch and HEAD move if writing
//! the file fails.

use std::path::{Path, PathBuf};

use git2::{BranchType, ObjectType, Oid, Repository, Signature, Status, build::TreeUpdateBuilder};

/// Why the working copy could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{dir} is not inside a Git working copy: {source}")]
    NotARepo { dir: PathBuf, source: git2::Error },
    #[error(
        "{dir} is not the top of its Git working copy ({top} is); pass the repository's top directory with --repo"
    )]
    NotTop { dir: PathBuf, top: PathBuf },
    #[error("{repo} has no commit yet (unborn HEAD); commit the manifests first")]
    Unborn { repo: PathBuf },
    #[error(
        "{path} has uncommitted changes ({status}); commit or stash them first, drgit will not mix its edit with yours"
    )]
    DirtyFile { path: String, status: String },
    #[error("{path} is not committed in HEAD; commit it first")]
    Untracked { path: String },
    #[error("branch `{branch}` already exists; delete it or wait a second for a new timestamp")]
    BranchExists { branch: String },
    #[error(
        "the Git remote `{remote}` is not configured; add it (`git remote add {remote} URL`) or set `[git] remote`"
    )]
    NoRemote { remote: String },
    #[error("{url}: cannot {what}: {detail}")]
    Remote {
        url: String,
        what: String,
        detail: String,
    },
    #[error(
        "{url}: `{refname}` moved (expected {expected}, found {found}); someone else pushed there, and drgit never overwrites work it did not write. Look at that branch, then delete it or run again"
    )]
    LeaseBroken {
        url: String,
        refname: String,
        expected: String,
        found: String,
    },
    #[error("{url} rejected the push to `{refname}`: {reason}{}", if messages.is_empty() { String::new() } else { format!("\nthe remote said:\n{messages}") })]
    PushRejected {
        url: String,
        refname: String,
        reason: String,
        messages: String,
    },
    #[error(
        "`{branch}` is not up to date with {remote}/{branch} (local {local}, remote {found}); pull first, then run again"
    )]
    NotUpToDate {
        branch: String,
        remote: String,
        local: String,
        found: String,
    },
    #[error("HEAD is not on a branch; check out the branch to commit on (`git switch main`)")]
    Detached,
    #[error("git: {context}: {source}")]
    Git {
        context: String,
        source: git2::Error,
    },
    #[error("cannot write {path}: {source}; the branch and HEAD were put back as they were")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

fn git(context: impl Into<String>) -> impl FnOnce(git2::Error) -> GitError {
    let context = context.into();
    move |source| GitError::Git { context, source }
}

pub struct WorkRepo {
    repo: Repository,
    top: PathBuf,
}

/// Where a commit goes.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A branch that must not exist yet, from HEAD.
    NewBranch(&'a str),
    /// drgit's own branch for an intent: created, or moved to a new commit
    /// on top of HEAD (the push that follows is leased).
    OwnBranch(&'a str),
    /// The branch HEAD is on (`--direct`).
    Head,
}

/// What a deployed revision holds of drgit's commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    /// It is the commit, or a later one with the same manifest.
    Yes,
    /// It does not contain the commit (older, or another line of history).
    NotContained,
    /// It contains the commit, but the manifest changed since.
    ManifestDiffers,
    /// Not in the local repository (fetch first), or not a commit ID.
    Unknown,
}

/// A commit drgit made, with what it takes to undo it.
#[derive(Debug, Clone)]
pub struct Committed {
    pub branch: String,
    pub commit: Oid,
    prev_head: Option<String>,
    prev_commit: Oid,
    prev_branch: Option<Oid>,
}

impl WorkRepo {
    /// Opens the working copy whose top directory is `dir`.
    pub fn open(dir: &Path) -> Result<WorkRepo, GitError> {
        let repo = Repository::discover(dir).map_err(|source| GitError::NotARepo {
            dir: dir.to_path_buf(),
            source,
        })?;
        let top = repo
            .workdir()
            .map(Path::to_path_buf)
            .ok_or_else(|| GitError::NotARepo {
                dir: dir.to_path_buf(),
                source: git2::Error::from_str("bare repository"),
            })?;
        let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        if canon(&top) != canon(dir) {
            return Err(GitError::NotTop {
                dir: dir.to_path_buf(),
                top,
            });
        }
        Ok(WorkRepo { repo, top })
    }

    pub fn top(&self) -> &Path {
        &self.top
    }

    pub(crate) fn git2(&self) -> &Repository {
        &self.repo
    }

    /// The branch HEAD is on, if any.
    pub fn current_branch(&self) -> Option<String> {
        let head = self.repo.head().ok()?;
        if !head.is_branch() {
            return None;
        }
        head.shorthand().ok().map(str::to_string)
    }

    /// Where `refs/remotes/<remote>/<branch>` points: what was last pushed or fetched.
    pub fn git2_tracking(&self, remote: &str, branch: &str) -> Option<Oid> {
        self.repo
            .refname_to_id(&format!("refs/remotes/{remote}/{branch}"))
            .ok()
    }

    /// A commit's message.
    pub fn commit_message(&self, oid: Oid) -> Option<String> {
        self.repo
            .find_commit(oid)
            .ok()
            .and_then(|c| c.message().ok().map(str::to_string))
    }

    /// The `.git` directory.
    pub fn git_dir(&self) -> PathBuf {
        self.repo.path().to_path_buf()
    }

    /// The commit a local branch points at.
    pub fn branch_commit(&self, branch: &str) -> Option<Oid> {
        self.repo
            .refname_to_id(&format!("refs/heads/{branch}"))
            .ok()
    }

    fn rel(path: &Path) -> String {
        path.to_string_lossy().replace('\\', "/")
    }

    /// Refuses when `rel_path` differs from HEAD in the index or working tree.
    pub fn check_file_clean(&self, rel_path: &Path) -> Result<(), GitError> {
        let rel = Self::rel(rel_path);
        let status = self
            .repo
            .status_file(rel_path)
            .map_err(git(format!("status of {rel}")))?;
        if status.contains(Status::WT_NEW) || status.contains(Status::INDEX_NEW) {
            return Err(GitError::Untracked { path: rel });
        }
        if status.is_empty() || status == Status::CURRENT {
            return Ok(());
        }
        let mut parts = Vec::new();
        if status.intersects(Status::INDEX_MODIFIED | Status::INDEX_DELETED | Status::INDEX_RENAMED)
        {
            parts.push("staged");
        }
        if status.intersects(
            Status::WT_MODIFIED | Status::WT_DELETED | Status::WT_RENAMED | Status::WT_TYPECHANGE,
        ) {
            parts.push("modified in the working tree");
        }
        if status.contains(Status::CONFLICTED) {
            parts.push("conflicted");
        }
        if parts.is_empty() {
            parts.push("changed");
        }
        Err(GitError::DirtyFile {
            path: rel,
            status: parts.join(", "),
        })
    }

    pub fn branch_exists(&self, branch: &str) -> bool {
        self.repo.find_branch(branch, BranchType::Local).is_ok()
    }

    fn signature(&self) -> Result<Signature<'static>, GitError> {
        self.repo
            .signature()
            .or_else(|_| Signature::now("drgit", "drgit@localhost"))
            .map_err(git("commit signature"))
    }

    /// Commits `content` as `rel_path` on a new branch from HEAD, switches to
    /// that branch, and writes the file in the working tree.
    pub fn commit_on_new_branch(
        &self,
        branch: &str,
        rel_path: &Path,
        content: &[u8],
        message: &str,
    ) -> Result<Committed, GitError> {
        self.commit_files(Target::NewBranch(branch), &[(rel_path, content)], message)
    }

    /// One file: see [`WorkRepo::commit_files`].
    pub fn commit_file(
        &self,
        target: Target<'_>,
        rel_path: &Path,
        content: &[u8],
        message: &str,
    ) -> Result<Committed, GitError> {
        self.commit_files(target, &[(rel_path, content)], message)
    }

    /// Commits the files (each relative path with its new content, each
    /// already in HEAD) on top of HEAD, on the branch `target` names,
    /// switches to that branch, writes the files in the working tree and
    /// stages them. If a write fails, the files already written, the branch
    /// and HEAD are put back.
    pub fn commit_files(
        &self,
        target: Target<'_>,
        files: &[(&Path, &[u8])],
        message: &str,
    ) -> Result<Committed, GitError> {
        let branch = match target {
            Target::NewBranch(b) => {
                if self.branch_exists(b) {
                    return Err(GitError::BranchExists {
                        branch: b.to_string(),
                    });
                }
                b.to_string()
            }
            Target::OwnBranch(b) => b.to_string(),
            Target::Head => self.current_branch().ok_or(GitError::Detached)?,
        };
        let old_branch_oid = self.branch_commit(&branch);
        let head = self.repo.head().map_err(|_| GitError::Unborn {
            repo: self.top.clone(),
        })?;
        let head_name = head.name().ok().map(str::to_string);
        let parent = head.peel_to_commit().map_err(|_| GitError::Unborn {
            repo: self.top.clone(),
        })?;
        let tree = parent.tree().map_err(git("read HEAD tree"))?;
        let mut update = TreeUpdateBuilder::new();
        let mut old_contents: Vec<Vec<u8>> = Vec::new();
        for (rel_path, content) in files {
            let rel = Self::rel(rel_path);
            let entry = tree
                .get_path(rel_path)
                .map_err(|_| GitError::Untracked { path: rel.clone() })?;
            let old = self
                .repo
                .find_blob(entry.id())
                .map_err(git(format!("read {rel}")))?;
            old_contents.push(old.content().to_vec());
            let blob = self.repo.blob(content).map_err(git("write blob"))?;
            update.upsert(&rel, blob, file_mode(entry.filemode()));
        }
        let new_tree_id = update
            .create_updated(&self.repo, &tree)
            .map_err(git("build tree"))?;
        let new_tree = self
            .repo
            .find_tree(new_tree_id)
            .map_err(git("read new tree"))?;
        let sig = self.signature()?;
        let commit = self
            .repo
            .commit(None, &sig, &sig, message, &new_tree, &[&parent])
            .map_err(git("create commit"))?;
        let refname = format!("refs/heads/{branch}");
        self.repo
            .reference(&refname, commit, true, "drgit: commit")
            .map_err(git(format!("update branch {branch}")))?;
        let undo = |this: &WorkRepo, written: usize| {
            for ((rel_path, _), old) in files.iter().zip(&old_contents).take(written) {
                let _ = crate::manifest::write_atomic(&this.top.join(rel_path), old);
            }
            let _ = match &head_name {
                Some(n) if n != "HEAD" => this.repo.set_head(n),
                _ => this.repo.set_head_detached(parent.id()),
            };
            match old_branch_oid {
                Some(old) => {
                    let _ = this.repo.reference(&refname, old, true, "drgit: undo");
                }
                None => {
                    if let Ok(mut b) = this.repo.find_branch(&branch, BranchType::Local) {
                        let _ = b.delete();
                    }
                }
            }
        };
        if let Err(e) = self.repo.set_head(&refname) {
            undo(self, 0);
            return Err(git("switch to the branch")(e));
        }
        for (i, (rel_path, content)) in files.iter().enumerate() {
            if let Err(source) = crate::manifest::write_atomic(&self.top.join(rel_path), content) {
                undo(self, i);
                return Err(GitError::Write {
                    path: Self::rel(rel_path),
                    source,
                });
            }
        }
        let staged = (|| {
            let mut index = self.repo.index().map_err(git("open index"))?;
            for (rel_path, _) in files {
                index
                    .add_path(rel_path)
                    .map_err(git(format!("stage {}", Self::rel(rel_path))))?;
            }
            index.write().map_err(git("write index"))
        })();
        if let Err(e) = staged {
            undo(self, files.len());
            return Err(e);
        }
        Ok(Committed {
            branch,
            commit,
            prev_head: head_name.filter(|n| n != "HEAD"),
            prev_commit: parent.id(),
            prev_branch: old_branch_oid,
        })
    }

    /// Puts everything `commit_files` changed back: HEAD, the branch, and
    /// each file (with its old content) and its index entry. The commit
    /// object stays unreferenced.
    pub fn undo_commit(&self, c: &Committed, files: &[(&Path, &[u8])]) -> Result<(), GitError> {
        let refname = format!("refs/heads/{}", c.branch);
        match &c.prev_head {
            Some(n) => self.repo.set_head(n),
            None => self.repo.set_head_detached(c.prev_commit),
        }
        .map_err(git("put HEAD back"))?;
        match c.prev_branch {
            Some(old) => {
                self.repo
                    .reference(&refname, old, true, "drgit: undo")
                    .map_err(git("put the branch back"))?;
            }
            None => {
                if let Ok(mut b) = self.repo.find_branch(&c.branch, BranchType::Local) {
                    b.delete().map_err(git("delete the branch"))?;
                }
            }
        }
        let mut index = self.repo.index().map_err(git("open index"))?;
        for (rel_path, old_content) in files {
            let rel = Self::rel(rel_path);
            crate::manifest::write_atomic(&self.top.join(rel_path), old_content).map_err(
                |source| GitError::Write {
                    path: rel.clone(),
                    source,
                },
            )?;
            index
                .add_path(rel_path)
                .map_err(git(format!("stage {rel}")))?;
        }
        index.write().map_err(git("write index"))?;
        Ok(())
    }

    /// Fetches `branch` and checks it out fast-forwarded to the remote, as
    /// `git switch BRANCH && git merge --ff-only REMOTE/BRANCH` would; local
    /// modifications are never overwritten (the checkout refuses).
    pub fn switch_to_remote_branch(
        &self,
        remote: &str,
        branch: &str,
        manifest: &Path,
    ) -> Result<(), GitError> {
        self.check_file_clean(manifest)?;
        let tip = self
            .fetch_branch(remote, branch)?
            .ok_or_else(|| GitError::Remote {
                url: self.remote_url(remote).unwrap_or_default(),
                what: format!("find branch {branch}"),
                detail: "it does not exist on the remote".into(),
            })?;
        if let Some(local) = self.branch_commit(branch)
            && local != tip
            && !self.repo.graph_descendant_of(tip, local).unwrap_or(false)
        {
            return Err(GitError::NotUpToDate {
                branch: branch.into(),
                remote: remote.into(),
                local: local.to_string(),
                found: tip.to_string(),
            });
        }
        let commit = self
            .repo
            .find_commit(tip)
            .map_err(git("read the remote commit"))?;
        let mut opts = git2::build::CheckoutBuilder::new();
        opts.safe();
        self.repo
            .checkout_tree(commit.as_object(), Some(&mut opts))
            .map_err(git(format!("check out {branch}")))?;
        self.repo
            .reference(
                &format!("refs/heads/{branch}"),
                tip,
                true,
                "drgit: fast-forward",
            )
            .map_err(git(format!("update {branch}")))?;
        self.repo
            .set_head(&format!("refs/heads/{branch}"))
            .map_err(git(format!("switch to {branch}")))?;
        Ok(())
    }

    /// Whether `revision` (a commit Argo CD deployed) contains `commit` and
    /// holds the same `rel_path` as it: later pushes are normal in the
    /// middle of an outage, and a revision equal to drgit's own commit is
    /// not what Argo CD reports once anyone pushed after it.
    pub fn revision_holds(
        &self,
        revision: &str,
        commit: &str,
        rel_path: &Path,
    ) -> Result<Holds, GitError> {
        let (Ok(rev), Ok(ours)) = (Oid::from_str(revision), Oid::from_str(commit)) else {
            return Ok(Holds::Unknown);
        };
        let (Ok(rev_commit), Ok(our_commit)) =
            (self.repo.find_commit(rev), self.repo.find_commit(ours))
        else {
            return Ok(Holds::Unknown);
        };
        if rev != ours
            && !self
                .repo
                .graph_descendant_of(rev, ours)
                .map_err(git("compare commits"))?
        {
            return Ok(Holds::NotContained);
        }
        let blob = |c: &git2::Commit| {
            c.tree()
                .ok()
                .and_then(|t| t.get_path(rel_path).ok())
                .map(|e| e.id())
        };
        match (blob(&rev_commit), blob(&our_commit)) {
            (Some(a), Some(b)) if a == b => {}
            _ => return Ok(Holds::ManifestDiffers),
        }
        Ok(Holds::Yes)
    }

    /// The distinct versions of a file, newest first, along HEAD's history
    /// (first parents), with the commit that introduced each.
    pub fn file_versions(&self, rel_path: &Path) -> Result<Vec<(Oid, Vec<u8>)>, GitError> {
        let mut walk = self.repo.revwalk().map_err(git("walk history"))?;
        walk.push_head().map_err(|_| GitError::Unborn {
            repo: self.top.clone(),
        })?;
        walk.simplify_first_parent().map_err(git("walk history"))?;
        let mut out: Vec<(Oid, Vec<u8>)> = Vec::new();
        let mut last_blob: Option<Oid> = None;
        for id in walk {
            let id = id.map_err(git("walk history"))?;
            let commit = self.repo.find_commit(id).map_err(git("read commit"))?;
            let tree = commit.tree().map_err(git("read tree"))?;
            let Ok(entry) = tree.get_path(rel_path) else {
                continue;
            };
            if entry.kind() != Some(ObjectType::Blob) || Some(entry.id()) == last_blob {
                continue;
            }
            last_blob = Some(entry.id());
            let blob = self.repo.find_blob(entry.id()).map_err(git("read blob"))?;
            out.push((id, blob.content().to_vec()));
        }
        Ok(out)
    }
}

fn file_mode(raw: i32) -> git2::FileMode {
    match raw {
        0o100755 => git2::FileMode::BlobExecutable,
        _ => git2::FileMode::Blob,
    }
}
