//! Talking to the Git remote: reading a remote ref, fetching a branch, and
//! pushing with a lease.
//!
//! libgit2 reports a rejected ref through the `push_update_reference`
//! callback while `Remote::push` itself returns Ok, so every push reads that
//! status. There is no force-with-lease in libgit2: the remote ref is read
//! right before the push and must be where drgit expects it (absent, or at
//! the commit drgit pushed last), otherwise nothing is pushed.
//!
//! Credentials, in order: a token from `DRGIT_GIT_TOKEN`, `GITHUB_TOKEN` or
//! `GH_TOKEN` for HTTPS, the ssh-agent for SSH, then git's own credential
//! helpers. Tokens never appear in messages; URLs are shown without
//! embedded user information.

use std::cell::{Cell, RefCell};

use git2::{Cred, CredentialType, Direction, FetchOptions, Oid, PushOptions, RemoteCallbacks};

use super::repo::{GitError, WorkRepo};

/// Where the remote ref must be for a push to go ahead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lease {
    /// The ref must not exist yet.
    Absent,
    /// The ref must point at this commit.
    At(Oid),
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub remote_ref: String,
    pub commit: Oid,
    pub forced: bool,
}

/// A token for HTTPS remotes, from the environment.
fn env_token() -> Option<String> {
    ["DRGIT_GIT_TOKEN", "GITHUB_TOKEN", "GH_TOKEN"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// `https://user:secret@host/x` → `https://host/x`.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            if path.is_empty() && !rest.contains('/') {
                format!("{scheme}://{host}")
            } else {
                format!("{scheme}://{host}/{path}")
            }
        }
        None => url.to_string(),
    }
}

/// Callbacks that answer credential requests, at most a few times (libgit2
/// asks again after every refusal).
fn callbacks<'a>(config: &'a git2::Config, attempts: &'a Cell<u32>) -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();
    cb.credentials(move |url, username, allowed| {
        attempts.set(attempts.get() + 1);
        if attempts.get() > 4 {
            return Err(git2::Error::from_str(
                "authentication failed (credentials were refused)",
            ));
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            return Cred::ssh_key_from_agent(username.unwrap_or("git"));
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            if attempts.get() == 1
                && let Some(token) = env_token()
            {
                return Cred::userpass_plaintext("x-access-token", &token);
            }
            return Cred::credential_helper(config, url, username);
        }
        Cred::default()
    });
    cb
}

impl WorkRepo {
    fn remote(&self, name: &str) -> Result<git2::Remote<'_>, GitError> {
        self.git2()
            .find_remote(name)
            .map_err(|_| GitError::NoRemote {
                remote: name.to_string(),
            })
    }

    /// The remote's URL, without credentials.
    pub fn remote_url(&self, name: &str) -> Result<String, GitError> {
        let remote = self.remote(name)?;
        Ok(redact_url(remote.url().unwrap_or_default()))
    }

    fn remote_error(&self, remote: &str, what: &str, e: git2::Error) -> GitError {
        GitError::Remote {
            url: self
                .remote_url(remote)
                .unwrap_or_else(|_| remote.to_string()),
            what: what.to_string(),
            detail: e.message().to_string(),
        }
    }

    /// Connects to the remote for reading and hands the connection to `f`.
    fn with_connection<T>(
        &self,
        remote: &str,
        f: impl FnOnce(&git2::RemoteConnection<'_, '_, '_>) -> Result<T, GitError>,
    ) -> Result<T, GitError> {
        self.connect(remote, Direction::Fetch, f)
    }

    /// Whether the remote would take a push, without pushing: connects
    /// for pushing (the receive-pack advertisement, which a forge serves
    /// only to credentials that may write) and lists the refs there; like
    /// `git push --dry-run`, nothing is sent. Returns how many refs it lists.
    pub fn check_push(&self, remote: &str) -> Result<usize, GitError> {
        self.connect(remote, Direction::Push, |conn| {
            conn.list()
                .map(|heads| heads.len())
                .map_err(|e| self.remote_error(remote, "list refs for a push", e))
        })
    }

    fn connect<T>(
        &self,
        remote: &str,
        direction: Direction,
        f: impl FnOnce(&git2::RemoteConnection<'_, '_, '_>) -> Result<T, GitError>,
    ) -> Result<T, GitError> {
        let config = self
            .git2()
            .config()
            .map_err(|e| self.remote_error(remote, "read git config", e))?;
        let attempts = Cell::new(0);
        let mut r = self.remote(remote)?;
        let conn = r
            .connect_auth(direction, Some(callbacks(&config, &attempts)), None)
            .map_err(|e| self.remote_error(remote, "connect", e))?;
        f(&conn)
    }

    /// Where `refname` (e.g. `refs/heads/main`) points on the remote now.
    pub fn ls_remote(&self, remote: &str, refname: &str) -> Result<Option<Oid>, GitError> {
        self.with_connection(remote, |conn| {
            let heads = conn
                .list()
                .map_err(|e| self.remote_error(remote, "list refs", e))?;
            Ok(heads.iter().find(|h| h.name() == refname).map(|h| h.oid()))
        })
    }

    /// The remote's default branch (what its HEAD points at), if it says.
    pub fn remote_default_branch(&self, remote: &str) -> Result<Option<String>, GitError> {
        self.with_connection(remote, |conn| {
            Ok(conn.default_branch().ok().and_then(|b| {
                b.as_str()
                    .ok()
                    .map(|s| s.trim_start_matches("refs/heads/").to_string())
            }))
        })
    }

    /// Fetches `branch` into `refs/remotes/<remote>/<branch>`; returns its commit.
    pub fn fetch_branch(&self, remote: &str, branch: &str) -> Result<Option<Oid>, GitError> {
        let config = self
            .git2()
            .config()
            .map_err(|e| self.remote_error(remote, "read git config", e))?;
        let attempts = Cell::new(0);
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(callbacks(&config, &attempts));
        let mut r = self.remote(remote)?;
        let spec = format!("+refs/heads/{branch}:refs/remotes/{remote}/{branch}");
        r.fetch(&[spec.as_str()], Some(&mut opts), None)
            .map_err(|e| self.remote_error(remote, &format!("fetch {branch}"), e))?;
        Ok(self
            .git2()
            .refname_to_id(&format!("refs/remotes/{remote}/{branch}"))
            .ok())
    }

    /// Pushes `local_branch` to `remote_branch` if the remote ref is where
    /// `lease` says. Forces only over drgit's own leased commit.
    pub fn push(
        &self,
        remote: &str,
        local_branch: &str,
        remote_branch: &str,
        lease: Lease,
    ) -> Result<Pushed, GitError> {
        let remote_ref = format!("refs/heads/{remote_branch}");
        let local = self
            .git2()
            .refname_to_id(&format!("refs/heads/{local_branch}"))
            .map_err(|e| self.remote_error(remote, &format!("read branch {local_branch}"), e))?;
        let found = self.ls_remote(remote, &remote_ref)?;
        let expected = match lease {
            Lease::Absent => None,
            Lease::At(oid) => Some(oid),
        };
        if found == Some(local) {
            return Ok(Pushed {
                remote_ref,
                commit: local,
                forced: false,
            });
        }
        if found != expected {
            return Err(GitError::LeaseBroken {
                url: self.remote_url(remote)?,
                refname: remote_ref,
                expected: expected
                    .map(|o| o.to_string())
                    .unwrap_or_else(|| "no branch".into()),
                found: found
                    .map(|o| o.to_string())
                    .unwrap_or_else(|| "no branch".into()),
            });
        }
        let forced = match found {
            Some(old) => !self.git2().graph_descendant_of(local, old).unwrap_or(false),
            None => false,
        };
        let spec = format!(
            "{}refs/heads/{local_branch}:{remote_ref}",
            if forced { "+" } else { "" }
        );

        let config = self
            .git2()
            .config()
            .map_err(|e| self.remote_error(remote, "read git config", e))?;
        let attempts = Cell::new(0);
        let statuses: RefCell<Vec<(String, Option<String>)>> = RefCell::new(Vec::new());
        let messages: RefCell<String> = RefCell::new(String::new());
        let mut cb = callbacks(&config, &attempts);
        cb.push_update_reference(|refname, status| {
            statuses
                .borrow_mut()
                .push((refname.to_string(), status.map(str::to_string)));
            Ok(())
        });
        cb.sideband_progress(|data| {
            messages
                .borrow_mut()
                .push_str(&String::from_utf8_lossy(data));
            true
        });
        let mut opts = PushOptions::new();
        opts.remote_callbacks(cb);
        let mut r = self.remote(remote)?;
        let result = r.push(&[spec.as_str()], Some(&mut opts));
        drop(opts);
        let remote_messages = messages.into_inner().trim().to_string();
        if let Err(e) = result {
            return Err(GitError::PushRejected {
                url: self.remote_url(remote)?,
                refname: remote_ref,
                reason: e.message().to_string(),
                messages: remote_messages,
            });
        }
        if let Some((_, Some(reason))) = statuses
            .into_inner()
            .into_iter()
            .find(|(r, s)| *r == remote_ref && s.is_some())
        {
            return Err(GitError::PushRejected {
                url: self.remote_url(remote)?,
                refname: remote_ref,
                reason,
                messages: remote_messages,
            });
        }
        // Keep the remote-tracking ref in step, as `git push` does.
        let _ = self.git2().reference(
            &format!("refs/remotes/{remote}/{remote_branch}"),
            local,
            true,
            "drgit push",
        );
        Ok(Pushed {
            remote_ref,
            commit: local,
            forced,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_secrets() {
        assert_eq!(
            redact_url("https://x-access-token:ghp_secret@github.com/a/b.git"),
            "https://github.com/a/b.git"
        );
        assert_eq!(
            redact_url("https://github.com/a/b.git"),
            "https://github.com/a/b.git"
        );
        assert_eq!(
            redact_url("git@github.com:a/b.git"),
            "git@github.com:a/b.git"
        );
        assert_eq!(
            redact_url("file:///tmp/remote.git"),
            "file:///tmp/remote.git"
        );
    }
}
