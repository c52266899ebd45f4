//! A FAKE GitHub: a loopback HTTP server speaking the few REST endpoints
//! drgit calls, with GitHub's status codes and JSON shapes (201 on create,
//! 422 "A pull request already exists", 401 "Bad credentials", 403 rate
//! limit with `x-ratelimit-*` headers, 5xx), recording every request so
//! tests can assert the exact calls. It is a stand-in: no GitHub here.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: std::time::Instant,
    pub method: String,
    pub path: String,
    pub auth: Option<String>,
    pub body: Value,
}

#[derive(Debug, Clone)]
pub struct Pr {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub head: String,
    pub base: String,
    pub draft: bool,
    pub state: String,
    pub merged: bool,
    pub labels: Vec<String>,
    pub reviewers: Vec<String>,
    pub assignees: Vec<String>,
    pub comments: Vec<String>,
    /// Polls of GET /pulls/N left before it reports merged (None: never by itself).
    pub merge_after_polls: Option<u32>,
    /// The merge commit once merged.
    pub merge_sha: Option<String>,
}

impl Pr {
    /// A pull request just opened: no labels, reviewers or comments.
    pub fn open(number: u64, title: &str, body: &str, head: &str, base: &str) -> Pr {
        Pr {
            number,
            title: title.into(),
            body: body.into(),
            head: head.into(),
            base: base.into(),
            draft: false,
            state: "open".into(),
            merged: false,
            labels: vec![],
            reviewers: vec![],
            assignees: vec![],
            comments: vec![],
            merge_after_polls: None,
            merge_sha: None,
        }
    }
}

/// A forced answer for the next request matching `path_contains`.
#[derive(Debug, Clone)]
pub struct Fault {
    pub path_contains: String,
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(String, String)>,
}

#[derive(Default)]
pub struct State {
    pub requests: Vec<Recorded>,
    pub prs: Vec<Pr>,
    pub faults: VecDeque<Fault>,
    /// Tokens accepted in `Authorization`.
    pub tokens: Vec<String>,
    /// GitHub App installation tokens handed out.
    pub installation_tokens: u32,
    /// Merge new PRs after this many polls.
    pub merge_after_polls: Option<u32>,
    /// Hide open PRs from the next list call (a race with another opener).
    pub hide_from_next_list: bool,
    /// A merge fast-forwards `main` of this bare repository to the head branch.
    pub bare_repo: Option<std::path::PathBuf>,
    /// What `GET /repos/{owner}/{repo}` says a token may do (`permissions`,
    /// present for a user's token: docs.github.com/rest/repos/repos#get-a-repository).
    pub can_push: bool,
}

/// Fast-forwards main to the pull request's head in the bare repository;
/// returns the merge commit.
fn merge_into_main(bare: &Option<std::path::PathBuf>, head: &str) -> Option<String> {
    let bare = bare.as_ref()?;
    let git = |args: &[&str]| super::bare_git(bare, args);
    let sha = git(&["rev-parse", &format!("refs/heads/{head}")])?;
    git(&["update-ref", "refs/heads/main", &sha])?;
    Some(sha)
}

pub struct FakeGitHub {
    pub url: String,
    pub owner: String,
    pub repo: String,
    pub state: Arc<Mutex<State>>,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Every test with a forge: no token reached a pull request's
        // title, body or comments, nor a commit message pushed.
        if std::thread::panicking() {
            return;
        }
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let messages = st
            .bare_repo
            .as_ref()
            .and_then(|b| super::bare_git(b, &["log", "--all", "--format=%B"]))
            .unwrap_or_default();
        for token in st.tokens.iter().filter(|t| t.len() >= 6) {
            for pr in &st.prs {
                let texts = [&pr.title, &pr.body].into_iter().chain(&pr.comments);
                for text in texts {
                    assert!(
                        !text.contains(token.as_str()),
                        "a token reached PR #{}: {text}",
                        pr.number
                    );
                }
            }
            assert!(
                !messages.contains(token.as_str()),
                "a token reached a commit message: {messages}"
            );
        }
    }
}

impl FakeGitHub {
    pub fn start(owner: &str, repo: &str, token: &str) -> FakeGitHub {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let url = format!("http://127.0.0.1:{port}");
        let state = Arc::new(Mutex::new(State {
            tokens: vec![token.to_string()],
            can_push: true,
            ..State::default()
        }));
        let (s2, st2, base) = (server.clone(), state.clone(), url.clone());
        let (o, r) = (owner.to_string(), repo.to_string());
        let thread = std::thread::spawn(move || {
            for mut req in s2.incoming_requests() {
                let mut body = String::new();
                let _ = req.as_reader().read_to_string(&mut body);
                let auth = req
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Authorization"))
                    .map(|h| h.value.as_str().to_string());
                let method = req.method().as_str().to_string();
                let path = req.url().to_string();
                let (status, value, headers) =
                    handle(&st2, &base, &o, &r, &method, &path, auth.as_deref(), &body);
                let mut resp =
                    tiny_http::Response::from_string(value.to_string()).with_status_code(status);
                resp.add_header(
                    tiny_http::Header::from_bytes(
                        "Content-Type",
                        "application/json; charset=utf-8",
                    )
                    .unwrap(),
                );
                for (k, v) in headers {
                    resp.add_header(
                        tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).unwrap(),
                    );
                }
                let _ = req.respond(resp);
            }
        });
        FakeGitHub {
            url,
            owner: owner.into(),
            repo: repo.into(),
            state,
            server,
            thread: Some(thread),
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// `METHOD path` of every request, in order.
    pub fn calls(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    pub fn prs(&self) -> Vec<Pr> {
        self.state.lock().unwrap().prs.clone()
    }

    pub fn fault(&self, path_contains: &str, status: u16, body: Value, headers: &[(&str, &str)]) {
        self.state.lock().unwrap().faults.push_back(Fault {
            path_contains: path_contains.into(),
            status,
            body,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        });
    }

    /// Marks a pull request merged (as the merge button would).
    pub fn merge(&self, number: u64) {
        let mut st = self.state.lock().unwrap();
        if let Some(pr) = st.prs.iter_mut().find(|p| p.number == number) {
            pr.merged = true;
            pr.state = "closed".into();
        }
    }

    pub fn clear_requests(&self) {
        self.state.lock().unwrap().requests.clear();
    }
}

fn pr_json(base: &str, owner: &str, repo: &str, p: &Pr) -> Value {
    json!({
        "url": format!("{base}/repos/{owner}/{repo}/pulls/{}", p.number),
        "id": 1000 + p.number,
        "number": p.number,
        "html_url": format!("https://github.example/{owner}/{repo}/pull/{}", p.number),
        "state": p.state,
        "title": p.title,
        "body": p.body,
        "draft": p.draft,
        "merged": p.merged,
        "merge_commit_sha": if p.merged { Value::from(p.merge_sha.clone().unwrap_or_else(|| format!("{:040x}", 0xabcdef00u64 + p.number))) } else { Value::Null },
        "labels": p.labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
        "head": {"ref": p.head, "label": format!("{owner}:{}", p.head)},
        "base": {"ref": p.base},
    })
}

#[allow(clippy::too_many_arguments)]
fn handle(
    st: &Arc<Mutex<State>>,
    base: &str,
    owner: &str,
    repo: &str,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, Value, Vec<(String, String)>) {
    let mut st = st.lock().unwrap();
    let body_json: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    st.requests.push(Recorded {
        at: std::time::Instant::now(),
        method: method.into(),
        path: path.into(),
        auth: auth.map(str::to_string),
        body: body_json.clone(),
    });
    if let Some(i) = st
        .faults
        .iter()
        .position(|f| path.contains(&f.path_contains))
    {
        let f = st.faults.remove(i).unwrap();
        return (f.status, f.body, f.headers);
    }
    // GitHub App: exchange the app JWT for an installation token.
    if method == "POST"
        && path.starts_with("/app/installations/")
        && path.ends_with("/access_tokens")
    {
        if !auth.is_some_and(|a| a.starts_with("Bearer ey")) {
            return (
                401,
                json!({"message": "A JSON web token could not be decoded"}),
                vec![],
            );
        }
        st.installation_tokens += 1;
        let token = format!("ghs_installation{}", st.installation_tokens);
        st.tokens.push(token.clone());
        return (
            201,
            json!({"token": token, "expires_at": "2099-01-01T00:00:00Z", "permissions": {"contents": "write", "pull_requests": "write", "issues": "write"}, "repository_selection": "selected"}),
            vec![],
        );
    }
    let token_ok = auth
        .map(|a| a.trim_start_matches("Bearer ").trim_start_matches("token "))
        .is_some_and(|t| st.tokens.iter().any(|k| k == t));
    if !token_ok {
        return (
            401,
            json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}),
            vec![],
        );
    }
    let prefix = format!("/repos/{owner}/{repo}");
    let Some(rest) = path.strip_prefix(&prefix) else {
        return (404, json!({"message": "Not Found"}), vec![]);
    };
    let (route, query) = rest.split_once('?').unwrap_or((rest, ""));
    let segs: Vec<&str> = route.split('/').filter(|s| !s.is_empty()).collect();
    match (method, segs.as_slice()) {
        ("GET", []) => (
            200,
            json!({"full_name": format!("{owner}/{repo}"), "default_branch": "main", "permissions": {"admin": false, "maintain": false, "push": st.can_push, "triage": st.can_push, "pull": true}}),
            vec![],
        ),
        ("GET", ["pulls"]) => {
            let head = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("head="))
                .map(|h| h.replace("%3A", ":").replace("%2F", "/"));
            let hide = std::mem::take(&mut st.hide_from_next_list);
            let list: Vec<Value> = st
                .prs
                .iter()
                .filter(|p| !hide && p.state == "open")
                .filter(|p| {
                    head.as_deref()
                        .is_none_or(|h| h == format!("{owner}:{}", p.head))
                })
                .map(|p| pr_json(base, owner, repo, p))
                .collect();
            (200, Value::Array(list), vec![])
        }
        ("POST", ["pulls"]) => {
            let head = body_json["head"].as_str().unwrap_or_default().to_string();
            if st.prs.iter().any(|p| p.head == head && p.state == "open") {
                return (
                    422,
                    json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "custom", "message": format!("A pull request already exists for {owner}:{head}.")}], "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request"}),
                    vec![],
                );
            }
            let number = st.prs.len() as u64 + 1;
            let pr = Pr {
                draft: body_json["draft"].as_bool().unwrap_or(false),
                merge_after_polls: st.merge_after_polls,
                ..Pr::open(
                    number,
                    body_json["title"].as_str().unwrap_or_default(),
                    body_json["body"].as_str().unwrap_or_default(),
                    &head,
                    body_json["base"].as_str().unwrap_or_default(),
                )
            };
            let v = pr_json(base, owner, repo, &pr);
            st.prs.push(pr);
            (201, v, vec![])
        }
        (m, ["pulls", n]) => {
            let n: u64 = n.parse().unwrap_or(0);
            let bare = st.bare_repo.clone();
            let Some(pr) = st.prs.iter_mut().find(|p| p.number == n) else {
                return (404, json!({"message": "Not Found"}), vec![]);
            };
            if m == "PATCH" {
                if let Some(t) = body_json["title"].as_str() {
                    pr.title = t.into();
                }
                if let Some(b) = body_json["body"].as_str() {
                    pr.body = b.into();
                }
            } else if let Some(left) = pr.merge_after_polls.as_mut() {
                if *left == 0 && !pr.merged {
                    pr.merged = true;
                    pr.state = "closed".into();
                    pr.merge_sha = merge_into_main(&bare, &pr.head.clone());
                } else if *left > 0 {
                    *left -= 1;
                }
            }
            let v = pr_json(base, owner, repo, pr);
            (200, v, vec![])
        }
        ("POST", ["issues", n, what]) | ("POST", ["pulls", n, what]) => {
            let n: u64 = n.parse().unwrap_or(0);
            let Some(pr) = st.prs.iter_mut().find(|p| p.number == n) else {
                return (404, json!({"message": "Not Found"}), vec![]);
            };
            let strings = |k: &str| -> Vec<String> {
                body_json[k]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            match *what {
                "labels" => {
                    for l in strings("labels") {
                        if !pr.labels.contains(&l) {
                            pr.labels.push(l);
                        }
                    }
                    (
                        200,
                        Value::Array(pr.labels.iter().map(|l| json!({"name": l})).collect()),
                        vec![],
                    )
                }
                "requested_reviewers" => {
                    pr.reviewers.extend(strings("reviewers"));
                    (201, pr_json(base, owner, repo, pr), vec![])
                }
                "assignees" => {
                    pr.assignees.extend(strings("assignees"));
                    (201, pr_json(base, owner, repo, pr), vec![])
                }
                "comments" => {
                    pr.comments
                        .push(body_json["body"].as_str().unwrap_or_default().into());
                    (201, json!({"id": 1, "body": body_json["body"]}), vec![])
                }
                _ => (404, json!({"message": "Not Found"}), vec![]),
            }
        }
        _ => (404, json!({"message": "Not Found"}), vec![]),
    }
}
