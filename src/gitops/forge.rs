//! Pull requests on GitHub (and GitHub Enterprise), through octocrab.
//!
//! A blocking facade over the async client: the scenarios stay plain
//! sequential code. Requests go through octocrab's raw methods so that
//! every status and header GitHub sends is seen here: 401, 403 with a
//! rate-limit reset, 404, 422 ("A pull request already exists"), and 5xx
//! (retried with backoff, a bounded number of times).
//!
//! Authentication: `GITHUB_TOKEN` or `GH_TOKEN`, or a GitHub App (app id,
//! private key file, installation id) for bot use. The token is never
//! printed, logged or put in an error.

use std::time::Duration;

use jiff::Timestamp;
use octocrab::Octocrab;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Forge as ForgeConfig;

#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error(
        "no GitHub credentials: set GITHUB_TOKEN (or GH_TOKEN), or `[forge] app_id`, `app_key_file` and `installation_id` for a GitHub App"
    )]
    NoCredentials,
    #[error(
        "cannot tell the GitHub repository from the remote URL `{url}`; set `[forge] repo = \"owner/name\"`"
    )]
    UnknownRepo { url: String },
    #[error(
        "GitHub refused the credentials (401 on {what}): {message}. Check that the token is valid and not expired"
    )]
    Unauthorized { what: String, message: String },
    #[error("GitHub rate limit reached on {what}{}; wait, or use a GitHub App installation token", reset.map(|r| format!(" (resets at {r})")).unwrap_or_default())]
    RateLimited {
        what: String,
        reset: Option<Timestamp>,
    },
    #[error(
        "GitHub forbids {what} (403): {message}. The token needs `contents: write` and `pull_requests: write` on the repository"
    )]
    Forbidden { what: String, message: String },
    #[error(
        "GitHub has no {what} (404): check `[forge] repo` and that the token can see the repository"
    )]
    NotFound { what: String },
    #[error("GitHub rejected {what} (422): {message}")]
    Unprocessable { what: String, message: String },
    #[error(
        "GitHub failed on {what} ({status}) {tries} times in a row: {message}; try again later"
    )]
    Server {
        what: String,
        status: u16,
        tries: u32,
        message: String,
    },
    #[error("cannot reach GitHub at {api} for {what}: {detail}")]
    Transport {
        api: String,
        what: String,
        detail: String,
    },
    #[error("cannot read the GitHub App key {path}: {source}")]
    AppKey {
        path: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("pull request #{number} was closed without being merged ({url})")]
    ClosedUnmerged { number: u64, url: String },
    #[error("stopped while waiting for pull request #{number} to be merged")]
    Interrupted { number: u64 },
    #[error("pull request #{number} was not merged within {waited:?} ({url})")]
    MergeTimeout {
        number: u64,
        url: String,
        waited: Duration,
    },
}

/// The fields of a pull request drgit reads.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
pub struct PullRequest {
    pub number: u64,
    pub html_url: String,
    pub title: String,
    #[serde(default)]
    pub body: Option<String>,
    pub state: String,
    #[serde(default)]
    pub draft: Option<bool>,
    #[serde(default)]
    pub merged: Option<bool>,
    #[serde(default)]
    pub merge_commit_sha: Option<String>,
    #[serde(default)]
    pub labels: Vec<Label>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
pub struct Label {
    pub name: String,
}

/// What to open.
#[derive(Debug, Clone)]
pub struct NewPr<'a> {
    pub title: &'a str,
    pub body: &'a str,
    pub head: &'a str,
    pub base: &'a str,
    pub draft: bool,
}

/// `owner/name` from a remote URL (`https://host/owner/name.git`,
/// `git@host:owner/name.git`, `ssh://git@host/owner/name`).
pub fn repo_from_url(url: &str) -> Option<(String, String)> {
    let path = if let Some((_, rest)) = url.split_once("://") {
        rest.split_once('/')?.1
    } else {
        url.split_once(':')?.1
    };
    let path = path.trim_end_matches('/').trim_end_matches(".git");
    let mut parts = path.rsplitn(2, '/');
    let name = parts.next()?;
    let owner = parts.next()?.rsplit('/').next()?;
    (!owner.is_empty() && !name.is_empty()).then(|| (owner.to_string(), name.to_string()))
}

pub struct GitHub {
    rt: tokio::runtime::Runtime,
    client: Octocrab,
    api: String,
    owner: String,
    repo: String,
    /// Attempts for a request that fails with 5xx or a transport error.
    pub tries: u32,
    pub backoff: Duration,
}

impl GitHub {
    /// Connects with the configured credentials. `remote_url` names the
    /// repository when `[forge] repo` does not.
    pub fn connect(cfg: &ForgeConfig, remote_url: &str) -> Result<GitHub, ForgeError> {
        crate::init_tls();
        let (owner, repo) = match &cfg.repo {
            Some(r) => r
                .split_once('/')
                .map(|(o, n)| (o.to_string(), n.to_string()))
                .ok_or_else(|| ForgeError::UnknownRepo { url: r.clone() })?,
            None => repo_from_url(remote_url).ok_or_else(|| ForgeError::UnknownRepo {
                url: remote_url.to_string(),
            })?,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ForgeError::Transport {
                api: cfg.api_url.clone(),
                what: "start".into(),
                detail: e.to_string(),
            })?;
        let transport = |detail: String| ForgeError::Transport {
            api: cfg.api_url.clone(),
            what: "connect".into(),
            detail,
        };
        let client = rt.block_on(async {
            let builder = Octocrab::builder()
                .base_uri(cfg.api_url.as_str())
                .map_err(|e| transport(e.to_string()))?
                .add_retry_config(octocrab::service::middleware::retry::RetryConfig::None)
                .set_connect_timeout(Some(Duration::from_secs(10)))
                .set_read_timeout(Some(Duration::from_secs(30)));
            let token = ["GITHUB_TOKEN", "GH_TOKEN"]
                .iter()
                .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
            match (&cfg.app_id, &cfg.app_key_file, &cfg.installation_id, token) {
                (Some(app), Some(key_file), Some(inst), _) => {
                    let pem = std::fs::read(key_file).map_err(|e| ForgeError::AppKey {
                        path: key_file.display().to_string(),
                        source: Box::new(e),
                    })?;
                    let key = octocrab::EncodingKey::from_rsa_pem(&pem).map_err(|e| {
                        ForgeError::AppKey {
                            path: key_file.display().to_string(),
                            source: Box::new(e),
                        }
                    })?;
                    let app_client = builder
                        .app(octocrab::models::AppId(*app), key)
                        .build()
                        .map_err(|e| transport(e.to_string()))?;
                    app_client
                        .installation(octocrab::models::InstallationId(*inst))
                        .map_err(|e| transport(e.to_string()))
                }
                (_, _, _, Some(token)) => builder
                    .personal_token(token)
                    .build()
                    .map_err(|e| transport(e.to_string())),
                _ => Err(ForgeError::NoCredentials),
            }
        })?;
        Ok(GitHub {
            rt,
            client,
            api: cfg.api_url.clone(),
            owner,
            repo,
            tries: 3,
            backoff: Duration::from_millis(200),
        })
    }

    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.repo)
    }

    /// One API call; JSON in, JSON out, errors mapped, 5xx retried.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> Result<Value, ForgeError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.rt.block_on(async {
                let resp = match method {
                    "GET" => self.client._get(path).await,
                    "POST" => self.client._post(path, body.as_ref()).await,
                    "PATCH" => self.client._patch(path, body.as_ref()).await,
                    _ => unreachable!("drgit uses GET, POST and PATCH only"),
                };
                let resp = resp.map_err(|e| (0u16, e.to_string(), None))?;
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                let text = self
                    .client
                    .body_to_string(resp)
                    .await
                    .map_err(|e| (status, e.to_string(), None))?;
                Ok::<_, (u16, String, Option<http::HeaderMap>)>((status, text, headers))
            });
            let (status, text, headers) = match result {
                Ok(r) => r,
                Err((_, detail, _)) if attempt < self.tries => {
                    tracing::warn!(what, detail, "GitHub request failed; retrying");
                    std::thread::sleep(self.backoff * 2u32.pow(attempt - 1));
                    continue;
                }
                Err((_, detail, _)) => {
                    return Err(ForgeError::Transport {
                        api: self.api.clone(),
                        what: what.into(),
                        detail,
                    });
                }
            };
            if (200..300).contains(&status) {
                return Ok(if text.trim().is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&text).unwrap_or(Value::Null)
                });
            }
            let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let mut message = json["message"].as_str().unwrap_or(text.trim()).to_string();
            if let Some(errors) = json["errors"].as_array() {
                let details: Vec<String> = errors
                    .iter()
                    .filter_map(|e| e["message"].as_str().map(str::to_string))
                    .collect();
                if !details.is_empty() {
                    message = format!("{message}: {}", details.join("; "));
                }
            }
            let what = what.to_string();
            return Err(match status {
                401 => ForgeError::Unauthorized { what, message },
                403 | 429
                    if status == 429
                        || headers
                            .get("x-ratelimit-remaining")
                            .and_then(|v| v.to_str().ok())
                            == Some("0")
                        || message.to_lowercase().contains("rate limit") =>
                {
                    let reset = headers
                        .get("x-ratelimit-reset")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i64>().ok())
                        .and_then(|s| Timestamp::from_second(s).ok());
                    ForgeError::RateLimited { what, reset }
                }
                403 => ForgeError::Forbidden { what, message },
                404 => ForgeError::NotFound { what },
                422 => ForgeError::Unprocessable { what, message },
                s if s >= 500 && attempt < self.tries => {
                    tracing::warn!(status = s, "GitHub server error; retrying");
                    std::thread::sleep(self.backoff * 2u32.pow(attempt - 1));
                    continue;
                }
                s => ForgeError::Server {
                    what,
                    status: s,
                    tries: attempt,
                    message,
                },
            });
        }
    }

    fn repo_path(&self) -> String {
        format!("/repos/{}/{}", self.owner, self.repo)
    }

    fn pr_from(v: Value, what: &str) -> Result<PullRequest, ForgeError> {
        serde_json::from_value(v).map_err(|e| ForgeError::Unprocessable {
            what: what.into(),
            message: format!("unexpected answer: {e}"),
        })
    }

    /// `GET /repos/{owner}/{repo}`.
    fn repository(&self) -> Result<Value, ForgeError> {
        self.call(
            "GET",
            &self.repo_path(),
            None,
            &format!("the repository {}", self.full_name()),
        )
    }

    pub fn default_branch(&self) -> Result<String, ForgeError> {
        let v = self.repository()?;
        Ok(v["default_branch"].as_str().unwrap_or("main").to_string())
    }

    /// The access GitHub reports for these credentials on the repository
    /// (`permissions` of `GET /repos/{owner}/{repo}`: admin, maintain,
    /// push, triage, pull); None when the answer has none (an App's
    /// installation token gets the App's permissions, not listed there).
    pub fn repo_permissions(&self) -> Result<Option<Vec<(String, bool)>>, ForgeError> {
        let v = self.repository()?;
        Ok(v["permissions"].as_object().map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_bool().unwrap_or(false)))
                .collect()
        }))
    }

    /// The open pull request from `head` (a branch of this repository).
    pub fn find_open_pr(&self, head: &str) -> Result<Option<PullRequest>, ForgeError> {
        let path = format!(
            "{}/pulls?state=open&head={}:{}",
            self.repo_path(),
            self.owner,
            head
        );
        let v = self.call("GET", &path, None, "the list of pull requests")?;
        let list: Vec<PullRequest> = serde_json::from_value(v).unwrap_or_default();
        Ok(list.into_iter().next())
    }

    pub fn create_pr(&self, pr: &NewPr) -> Result<PullRequest, ForgeError> {
        let body = json!({"title": pr.title, "body": pr.body, "head": pr.head, "base": pr.base, "draft": pr.draft});
        let what = format!("opening a pull request from {} into {}", pr.head, pr.base);
        Self::pr_from(
            self.call(
                "POST",
                &format!("{}/pulls", self.repo_path()),
                Some(body),
                &what,
            )?,
            &what,
        )
    }

    pub fn update_pr(
        &self,
        number: u64,
        title: Option<&str>,
        body: Option<&str>,
    ) -> Result<PullRequest, ForgeError> {
        let mut patch = serde_json::Map::new();
        if let Some(t) = title {
            patch.insert("title".into(), json!(t));
        }
        if let Some(b) = body {
            patch.insert("body".into(), json!(b));
        }
        let what = format!("updating pull request #{number}");
        Self::pr_from(
            self.call(
                "PATCH",
                &format!("{}/pulls/{number}", self.repo_path()),
                Some(Value::Object(patch)),
                &what,
            )?,
            &what,
        )
    }

    pub fn get_pr(&self, number: u64) -> Result<PullRequest, ForgeError> {
        let what = format!("pull request #{number}");
        Self::pr_from(
            self.call(
                "GET",
                &format!("{}/pulls/{number}", self.repo_path()),
                None,
                &what,
            )?,
            &what,
        )
    }

    pub fn add_labels(&self, number: u64, labels: &[String]) -> Result<(), ForgeError> {
        self.call(
            "POST",
            &format!("{}/issues/{number}/labels", self.repo_path()),
            Some(json!({ "labels": labels })),
            &format!("labelling #{number}"),
        )
        .map(|_| ())
    }

    pub fn request_reviewers(&self, number: u64, reviewers: &[String]) -> Result<(), ForgeError> {
        self.call(
            "POST",
            &format!("{}/pulls/{number}/requested_reviewers", self.repo_path()),
            Some(json!({ "reviewers": reviewers })),
            &format!("requesting reviews on #{number}"),
        )
        .map(|_| ())
    }

    pub fn add_assignees(&self, number: u64, assignees: &[String]) -> Result<(), ForgeError> {
        self.call(
            "POST",
            &format!("{}/issues/{number}/assignees", self.repo_path()),
            Some(json!({ "assignees": assignees })),
            &format!("assigning #{number}"),
        )
        .map(|_| ())
    }

    pub fn comment(&self, number: u64, body: &str) -> Result<(), ForgeError> {
        self.call(
            "POST",
            &format!("{}/issues/{number}/comments", self.repo_path()),
            Some(json!({ "body": body })),
            &format!("commenting on #{number}"),
        )
        .map(|_| ())
    }

    /// Polls until the pull request is merged (its merge commit) or closed.
    pub fn wait_merged(
        &self,
        number: u64,
        timeout: Duration,
        first_poll: Duration,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<String, ForgeError> {
        use crate::wait::{Poll, Stopped, poll_until};
        let mut url = String::new();
        let polled = poll_until(timeout, (first_poll, Duration::from_secs(30)), stop, |_| {
            let pr = self.get_pr(number)?;
            url = pr.html_url.clone();
            if pr.merged == Some(true) {
                return Ok(Poll::Ready(pr.merge_commit_sha.unwrap_or_default()));
            }
            if pr.state == "closed" {
                return Err(ForgeError::ClosedUnmerged {
                    number,
                    url: pr.html_url,
                });
            }
            Ok(Poll::Waiting(format!(
                "waiting for pull request #{number} to be merged ({})",
                pr.html_url
            )))
        });
        match polled {
            Ok(sha) => Ok(sha),
            Err(Stopped::Failed(e)) => Err(e),
            Err(Stopped::Interrupted) => Err(ForgeError::Interrupted { number }),
            Err(Stopped::TimedOut(t)) => Err(ForgeError::MergeTimeout {
                number,
                url,
                waited: t.waited,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_from_remote_urls() {
        let r = |u| repo_from_url(u).map(|(o, n)| format!("{o}/{n}"));
        assert_eq!(
            r("https://github.com/home/home-cluster.git").as_deref(),
            Some("home/home-cluster")
        );
        assert_eq!(
            r("git@github.com:home/home-cluster.git").as_deref(),
            Some("home/home-cluster")
        );
        assert_eq!(
            r("ssh://git@github.example.com/home/home-cluster").as_deref(),
            Some("home/home-cluster")
        );
        assert_eq!(r("https://github.com/").as_deref(), None);
    }
}
