//! Publishing end to end: the real binary pushing to real Git remotes (a
//! bare repository over file:// and over smart HTTP through the real `git
//! http-backend`, with a rejecting pre-receive hook and remotes that moved)
//! and opening pull requests on a FAKE GitHub (loopback, GitHub's status
//! codes and bodies, every request recorded).

mod common;

use common::fake_cluster::{FakeCluster, scripted_cluster as cluster};
use common::fake_github::FakeGitHub;
use common::git_http::GitHttp;
use common::{Fixture, TARGET};

const BRANCH: &str = "drgit/pg-recover-shared-pg";
const TOKEN: &str = "ghp_test0123456789secret";

fn ls_remote(f: &Fixture, bare: &std::path::Path, branch: &str) -> String {
    f.git_in(
        bare,
        &[
            "for-each-ref",
            "--format=%(objectname)",
            &format!("refs/heads/{branch}"),
        ],
    )
    .trim()
    .to_string()
}

#[test]
fn push_then_update_own_branch_under_lease() {
    let f = Fixture::new();
    let bare = f.add_remote(None);
    f.config("");
    let run = f.drgit(&["--json", "pg-recover", "--target-time", TARGET, "--push"]);
    run.assert_ok();
    let first = run.json()["commit"].as_str().unwrap().to_string();
    assert_eq!(run.json()["branch"], BRANCH);
    assert_eq!(ls_remote(&f, &bare, BRANCH), first);
    assert_eq!(
        run.json()["published"]["pushed"],
        format!("origin refs/heads/{BRANCH}")
    );

    // From main again, another target: drgit moves its own branch and
    // re-pushes it over the commit it pushed last.
    f.git(&["checkout", "-q", "main"]);
    let run = f.drgit_env(
        &[
            "--json",
            "pg-recover",
            "--target-time",
            "2026-11-26T03:02:30Z",
            "--push",
        ],
        &[("DRGIT_NOW", "2026-11-26T04:10:00Z")],
    );
    run.assert_ok();
    let second = run.json()["commit"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    assert_eq!(ls_remote(&f, &bare, BRANCH), second);
    let pushed = f.git_in(
        &bare,
        &[
            "show",
            &format!("{BRANCH}:manifests/database/shared-pg.yaml"),
        ],
    );
    assert!(pushed.contains("targetTime: \"2026-11-26 03:02:30.000000+00\""));
}

#[test]
fn never_overwrites_someone_elses_push() {
    let f = Fixture::new();
    let bare = f.add_remote(None);
    f.config("");
    f.drgit(&["pg-recover", "--target-time", TARGET, "--push"])
        .assert_ok();
    // Someone else adds a commit to drgit's branch on the remote.
    let other = f.dir.path().join("other");
    f.git_in(
        f.dir.path(),
        &[
            "clone",
            "-q",
            "-b",
            BRANCH,
            bare.to_str().unwrap(),
            other.to_str().unwrap(),
        ],
    );
    std::fs::write(other.join("NOTE.md"), "reviewed by hand\n").unwrap();
    f.git_in(&other, &["add", "NOTE.md"]);
    f.git_in(&other, &["commit", "-qm", "note"]);
    f.git_in(&other, &["push", "-q", "origin", BRANCH]);
    let theirs = ls_remote(&f, &bare, BRANCH);

    f.git(&["checkout", "-q", "main"]);
    let before = f.state();
    let run = f.drgit_env(
        &[
            "pg-recover",
            "--target-time",
            "2026-11-26T03:02:30Z",
            "--push",
        ],
        &[("DRGIT_NOW", "2026-11-26T04:10:00Z")],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("`refs/heads/{BRANCH}` moved")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("The local commit was undone"),
        "{}",
        run.stderr
    );
    assert_eq!(ls_remote(&f, &bare, BRANCH), theirs, "their commit stays");
    assert_eq!(f.state(), before, "the working copy is as it was");
}

#[test]
fn pre_receive_rejection_over_http_is_reported() {
    let f = Fixture::new();
    let srv = f.dir.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    let http = GitHttp::start(&srv, None);
    let bare = f.add_remote(Some(&format!("{}/home-cluster.git", http.url)));
    let hook = bare.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\necho 'policy: recovery changes need two approvals' >&2\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    f.config("");
    let before = f.state();
    let run = f.drgit(&["pg-recover", "--target-time", TARGET, "--push"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("rejected the push to `refs/heads/{BRANCH}`")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("policy: recovery changes need two approvals"),
        "{}",
        run.stderr
    );
    assert_eq!(f.state(), before);
    assert_eq!(ls_remote(&f, &bare, BRANCH), "");
}

#[test]
fn http_push_authenticates_with_the_token_and_never_shows_it() {
    let f = Fixture::new();
    let srv = f.dir.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    let http = GitHttp::start(&srv, Some(TOKEN));
    // The fixture's own push goes through file:// first, then origin points at HTTP.
    let bare = f.add_remote(None);
    f.git(&[
        "remote",
        "set-url",
        "origin",
        &format!("{}/home-cluster.git", http.url),
    ]);
    f.config("");

    let run = f.drgit(&["pg-recover", "--target-time", TARGET, "--push"]);
    assert_eq!(
        run.code, 1,
        "without a token the push must fail: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("cannot connect") || run.stderr.contains("authentication"),
        "{}",
        run.stderr
    );

    let run = f.drgit_env(
        &["--json", "pg-recover", "--target-time", TARGET, "--push"],
        &[("GITHUB_TOKEN", TOKEN)],
    );
    run.assert_ok();
    assert_eq!(
        ls_remote(&f, &bare, BRANCH),
        run.json()["commit"].as_str().unwrap()
    );
    assert!(!run.stdout.contains(TOKEN) && !run.stderr.contains(TOKEN));
}

#[test]
fn direct_push_commits_on_the_tracked_branch() {
    let f = Fixture::new();
    let bare = f.add_remote(None);
    f.config("");
    let run = f.drgit(&[
        "--json",
        "pg-recover",
        "--target-time",
        TARGET,
        "--push",
        "--direct",
    ]);
    run.assert_ok();
    assert_eq!(run.json()["branch"], "main");
    assert_eq!(
        f.git(&["rev-parse", "HEAD"]).trim(),
        ls_remote(&f, &bare, "main")
    );
    assert_eq!(f.git(&["symbolic-ref", "--short", "HEAD"]).trim(), "main");
}

#[test]
fn direct_push_refuses_when_the_remote_moved_on() {
    let f = Fixture::new();
    let bare = f.add_remote(None);
    f.config("");
    let other = f.dir.path().join("other");
    f.git_in(
        f.dir.path(),
        &[
            "clone",
            "-q",
            bare.to_str().unwrap(),
            other.to_str().unwrap(),
        ],
    );
    std::fs::write(other.join("README.md"), "someone else\n").unwrap();
    f.git_in(&other, &["add", "README.md"]);
    f.git_in(&other, &["commit", "-qm", "elsewhere"]);
    f.git_in(&other, &["push", "-q", "origin", "main"]);
    let before = f.state();
    let run = f.drgit(&["pg-recover", "--target-time", TARGET, "--push", "--direct"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("`main` is not up to date with origin/main"),
        "{}",
        run.stderr
    );
    // The fetch updated origin/main; nothing else changed.
    let mut after = f.state();
    after.refs = before.refs.clone();
    assert_eq!(after, before);

    f.git(&["checkout", "-q", "-b", "elsewhere"]);
    let run = f.drgit(&["pg-recover", "--target-time", TARGET, "--push", "--direct"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("HEAD is on `elsewhere`"),
        "{}",
        run.stderr
    );
}

fn github(f: &Fixture, extra: &str) -> FakeGitHub {
    let gh = FakeGitHub::start("home", "home-cluster", TOKEN);
    f.add_remote(None);
    f.config(&format!(
        "[forge]\napi_url = \"{}\"\nrepo = \"home/home-cluster\"\nmerge_poll_ms = 10\n{extra}",
        gh.url
    ));
    gh
}

fn with_token(f: &Fixture, args: &[&str], now: &str) -> common::Run {
    f.drgit_env(args, &[("GITHUB_TOKEN", TOKEN), ("DRGIT_NOW", now)])
}

#[test]
fn pr_twice_is_one_pr_then_the_revert_pr_links_back() {
    let f = Fixture::new();
    let gh = github(&f, "reviewers = [\"alice\"]\nassignees = [\"bob\"]\n");

    let run = with_token(
        &f,
        &[
            "--json",
            "pg-recover",
            "--target-time",
            TARGET,
            "--pr",
            "--auto-revert",
        ],
        "2026-11-26T04:00:00Z",
    );
    run.assert_ok();
    let pr = &run.json()["published"]["pull_request"];
    assert_eq!(pr["number"], 1);
    assert_eq!(pr["action"], "created");
    let head = "/repos/home/home-cluster/pulls?state=open&head=home:drgit/pg-recover-shared-pg";
    assert_eq!(
        gh.calls(),
        vec![
            "GET /repos/home/home-cluster".to_string(),
            format!("GET {head}"),
            "POST /repos/home/home-cluster/pulls".into(),
            "POST /repos/home/home-cluster/issues/1/labels".into(),
            "POST /repos/home/home-cluster/pulls/1/requested_reviewers".into(),
            "POST /repos/home/home-cluster/issues/1/assignees".into(),
        ]
    );
    let created = &gh.requests()[2].body;
    assert_eq!(created["head"], BRANCH);
    assert_eq!(created["base"], "main");
    assert_eq!(gh.prs()[0].labels, vec!["disaster-recovery", "pg-recover"]);

    // Again, with another target: the same branch and pull request, updated.
    gh.clear_requests();
    f.git(&["checkout", "-q", "main"]);
    let run = with_token(
        &f,
        &[
            "--json",
            "pg-recover",
            "--target-time",
            "2026-11-26T03:02:30Z",
            "--pr",
        ],
        "2026-11-26T04:10:00Z",
    );
    run.assert_ok();
    assert_eq!(run.json()["published"]["pull_request"]["action"], "updated");
    assert_eq!(
        gh.calls(),
        vec![
            "GET /repos/home/home-cluster".to_string(),
            format!("GET {head}"),
            "PATCH /repos/home/home-cluster/pulls/1".into(),
        ]
    );
    assert_eq!(gh.prs().len(), 1);
    let pr = gh.prs()[0].clone();
    insta::assert_snapshot!(
        "recovery_pr",
        common::redact(&format!("{}\n\n{}", pr.title, pr.body), &f)
    );

    // A third run with nothing new changes nothing on GitHub.
    gh.clear_requests();
    let run = with_token(
        &f,
        &[
            "--json",
            "pg-recover",
            "--target-time",
            "2026-11-26T03:02:30Z",
            "--pr",
        ],
        "2026-11-26T04:10:00Z",
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("already recovers to 2026-11-26 03:02:30.000000+00"),
        "{}",
        run.stderr
    );

    // The recovery is merged into main; the revert PR follows and links back.
    gh.merge(1);
    f.git(&["push", "-q", "origin", &format!("{BRANCH}:main")]);
    f.git(&["checkout", "-q", "main"]);
    f.git(&["pull", "-q", "--ff-only"]);
    gh.clear_requests();
    let run = with_token(&f, &["--json", "pg-revert", "--pr"], "2026-11-26T06:00:00Z");
    run.assert_ok();
    assert_eq!(run.json()["published"]["pull_request"]["number"], 2);
    let prs = gh.prs();
    assert_eq!(prs[1].head, "drgit/pg-revert-shared-pg");
    assert_eq!(prs[1].labels, vec!["disaster-recovery", "pg-revert"]);
    assert_eq!(prs[0].comments.len(), 1);
    assert!(prs[0].comments[0].contains("#2 puts `bootstrap` back to `initdb`"));
    insta::assert_snapshot!("revert_pr", format!("{}\n\n{}", prs[1].title, prs[1].body));

    // The token went only into Authorization headers.
    for r in gh.requests() {
        assert!(!r.body.to_string().contains(TOKEN));
        assert_eq!(r.auth.as_deref(), Some(format!("Bearer {TOKEN}").as_str()));
    }
}

#[test]
fn a_pr_opened_meanwhile_is_updated_not_duplicated() {
    let f = Fixture::new();
    let gh = github(&f, "");
    with_token(
        &f,
        &["pg-recover", "--target-time", TARGET, "--pr"],
        "2026-11-26T04:00:00Z",
    )
    .assert_ok();
    gh.state.lock().unwrap().hide_from_next_list = true;
    gh.clear_requests();
    f.git(&["checkout", "-q", "main"]);
    let run = with_token(
        &f,
        &[
            "--json",
            "pg-recover",
            "--target-time",
            "2026-11-26T03:02:30Z",
            "--pr",
        ],
        "2026-11-26T04:10:00Z",
    );
    run.assert_ok();
    let calls = gh.calls();
    assert!(
        calls.contains(&"POST /repos/home/home-cluster/pulls".to_string()),
        "{calls:?}"
    );
    assert!(
        calls.contains(&"PATCH /repos/home/home-cluster/pulls/1".to_string()),
        "{calls:?}"
    );
    assert_eq!(gh.prs().len(), 1);
    assert_eq!(run.json()["published"]["pull_request"]["action"], "updated");
}

#[test]
fn github_errors_are_specific_and_undo_the_local_commit() {
    let f = Fixture::new();
    let gh = github(&f, "");
    let before = f.state();

    let run = f.drgit_env(
        &["pg-recover", "--target-time", TARGET, "--pr"],
        &[("GITHUB_TOKEN", "ghp_wrong")],
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("GitHub refused the credentials (401"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("The local commit was undone"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("ghp_wrong"));
    assert_eq!(f.state().files_and_head(), before.files_and_head());

    let run = f.drgit(&["pg-recover", "--target-time", TARGET, "--pr"]);
    assert!(
        run.stderr.contains("no GitHub credentials"),
        "{}",
        run.stderr
    );

    gh.fault(
        "/pulls?",
        403,
        serde_json::json!({"message": "API rate limit exceeded for installation ID 1.", "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"}),
        &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1795670000")],
    );
    let run = with_token(
        &f,
        &["pg-recover", "--target-time", TARGET, "--pr"],
        "2026-11-26T04:00:00Z",
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("GitHub rate limit reached"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("resets at 2026-11-26T"),
        "{}",
        run.stderr
    );

    // One 502 is retried; the pull request is opened once.
    gh.clear_requests();
    gh.fault(
        "/pulls",
        502,
        serde_json::json!({"message": "Server Error"}),
        &[],
    );
    let run = with_token(
        &f,
        &["--json", "pg-recover", "--target-time", TARGET, "--pr"],
        "2026-11-26T04:00:00Z",
    );
    run.assert_ok();
    let lists = gh.calls().iter().filter(|c| c.contains("/pulls?")).count();
    assert_eq!(lists, 2, "{:?}", gh.calls());
    assert_eq!(gh.prs().len(), 1);

    // A server that keeps failing: give up after three tries.
    f.git(&["checkout", "-q", "main"]);
    for _ in 0..3 {
        gh.fault(
            "/pulls",
            503,
            serde_json::json!({"message": "Service Unavailable"}),
            &[],
        );
    }
    let run = with_token(
        &f,
        &[
            "pg-recover",
            "--target-time",
            "2026-11-26T03:02:30Z",
            "--pr",
        ],
        "2026-11-26T04:10:00Z",
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("(503) 3 times in a row"),
        "{}",
        run.stderr
    );
}

#[test]
fn wait_merge_reports_the_merge_commit() {
    let f = Fixture::new();
    let gh = github(&f, "");
    gh.state.lock().unwrap().merge_after_polls = Some(2);
    let run = with_token(
        &f,
        &[
            "--json",
            "pg-recover",
            "--target-time",
            TARGET,
            "--pr",
            "--wait-merge",
        ],
        "2026-11-26T04:00:00Z",
    );
    run.assert_ok();
    assert_eq!(
        run.json()["published"]["merge_commit"],
        format!("{:040x}", 0xabcdef01u64)
    );
    let polls = gh
        .calls()
        .iter()
        .filter(|c| c.ends_with("/pulls/1"))
        .count();
    assert_eq!(polls, 3);
}

#[test]
fn repository_templates_override_the_built_in_ones() {
    let f = Fixture::new();
    let gh = github(&f, "");
    let dir = f.repo().join(".drgit/templates");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("pg-recover.pr.md.j2"),
        "DR: {{ cluster }} to {{ target }}\n\nBase backup {{ base_backup }}.\n",
    )
    .unwrap();
    with_token(
        &f,
        &["pg-recover", "--target-time", TARGET, "--pr", "--draft"],
        "2026-11-26T04:00:00Z",
    )
    .assert_ok();
    let pr = gh.prs()[0].clone();
    assert_eq!(pr.title, format!("DR: shared-pg to {TARGET}"));
    assert_eq!(pr.body, "Base backup 20261126T030232.\n");
    assert!(pr.draft);
}

#[test]
fn github_app_authentication() {
    let f = Fixture::new();
    let key = f.dir.path().join("app.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "genrsa",
            "-traditional",
            "-out",
            key.to_str().unwrap(),
            "2048",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gh = github(
        &f,
        &format!(
            "app_id = 12345\ninstallation_id = 42\napp_key_file = \"{}\"\n",
            key.display()
        ),
    );
    let run = f.drgit(&["--json", "pg-recover", "--target-time", TARGET, "--pr"]);
    run.assert_ok();
    let reqs = gh.requests();
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/app/installations/42/access_tokens");
    assert!(
        reqs[1..]
            .iter()
            .all(|r| r.auth.as_deref() == Some("Bearer ghs_installation1")),
        "{reqs:?}"
    );
    assert_eq!(gh.prs().len(), 1);
}

/// A recovered Cluster in the repo's main branch, its recovery PR merged.
fn recovered(f: &Fixture, extra: &str) -> FakeGitHub {
    let gh = github(
        f,
        &format!("[postgres]\nrecovery_timeout_secs = 2\nhealth_poll_ms = 10\n{extra}"),
    );
    with_token(
        f,
        &[
            "pg-recover",
            "--target-time",
            TARGET,
            "--pr",
            "--auto-revert",
        ],
        "2026-11-26T04:00:00Z",
    )
    .assert_ok();
    gh.merge(1);
    f.git(&["push", "-q", "origin", &format!("{BRANCH}:main")]);
    f.git(&["checkout", "-q", "main"]);
    f.git(&["pull", "-q", "--ff-only"]);
    gh
}

#[test]
fn revert_waits_for_a_healthy_cluster() {
    let f = Fixture::new();
    let gh = recovered(&f, "");
    let kube = FakeCluster::scripted(vec![
        None,
        Some(cluster("Setting up primary", false, 0, true)),
        Some(cluster(
            "Waiting for the instances to become active",
            false,
            1,
            true,
        )),
        Some(cluster("Cluster in healthy state", true, 2, true)),
    ]);
    let kc = kube.kubeconfig(f.dir.path());
    let run = with_token(
        &f,
        &[
            "--json",
            "--kubeconfig",
            kc.to_str().unwrap(),
            "pg-revert",
            "--pr",
            "--when-healthy",
        ],
        "2026-11-26T06:00:00Z",
    );
    run.assert_ok();
    assert_eq!(kube.gets(), 4, "polled until healthy");
    assert_eq!(
        run.json()["cluster_state"]["phase"],
        "Cluster in healthy state"
    );
    assert_eq!(gh.prs().len(), 2, "the revert pull request exists");
    assert!(gh.prs()[0].comments[0].contains("#2"));
}

#[test]
fn revert_does_not_take_the_deleted_clusters_frozen_status_for_a_recovery() {
    // The last `--wait` run deleted the Cluster with this uid; while it
    // terminates, CNPG leaves its last status ("healthy") as it was.
    let f = Fixture::new();
    let gh = recovered(&f, "");
    let journal = serde_json::json!({
        "scenario": "pg-recover-wait", "started_at": "2026-11-26T04:00:00Z", "params": {},
        "steps": [{"name": "old-cluster", "description": "", "status": "done",
                   "output": {"uid": "00000000-0000-0000-0000-000000000001"}}]
    });
    let dir = f.repo().join(".git/drgit");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("journal.done.json"), journal.to_string()).unwrap();
    let mut frozen = cluster("Cluster in healthy state", true, 2, true);
    frozen["metadata"]["deletionTimestamp"] = "2026-11-26T04:30:00Z".into();
    let kube = FakeCluster::scripted(vec![Some(frozen)]);
    let kc = kube.kubeconfig(f.dir.path());
    let run = with_token(
        &f,
        &[
            "--kubeconfig",
            kc.to_str().unwrap(),
            "pg-revert",
            "--pr",
            "--when-healthy",
        ],
        "2026-11-26T06:00:00Z",
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("last seen: still the old Cluster (uid 00000000-0000-0000-0000-000000000001), being deleted"),
        "{}",
        run.stderr
    );
    assert_eq!(gh.prs().len(), 1, "no revert pull request");
}

#[test]
fn revert_is_refused_while_recovery_is_not_done() {
    for (state, expect) in [
        (
            Some(cluster(
                "Cluster is unrecoverable and needs manual intervention",
                false,
                0,
                true,
            )),
            "is unrecoverable",
        ),
        (
            Some(cluster("Cluster in healthy state", true, 2, false)),
            "runs with `bootstrap.initdb`",
        ),
        (
            Some(cluster("Setting up primary", false, 0, true)),
            "was not healthy within",
        ),
        (None, "last seen: no Cluster"),
    ] {
        let f = Fixture::new();
        let gh = recovered(&f, "");
        let kube = FakeCluster::scripted(vec![state]);
        let kc = kube.kubeconfig(f.dir.path());
        let before = f.state();
        let run = with_token(
            &f,
            &[
                "--kubeconfig",
                kc.to_str().unwrap(),
                "pg-revert",
                "--pr",
                "--when-healthy",
            ],
            "2026-11-26T06:00:00Z",
        );
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(run.stderr.contains(expect), "{expect}: {}", run.stderr);
        assert_eq!(gh.prs().len(), 1, "no revert pull request");
        assert_eq!(f.state(), before);
    }
}

#[test]
#[should_panic(expected = "a token reached PR #1")]
fn the_check_every_forge_test_gets_finds_a_token_in_a_pull_request() {
    let gh = FakeGitHub::start("home", "home-cluster", "ghp_leaked_into_a_body");
    gh.state
        .lock()
        .unwrap()
        .prs
        .push(common::fake_github::Pr::open(
            1,
            "recover",
            "token ghp_leaked_into_a_body",
            "drgit/x",
            "main",
        ));
    drop(gh);
}
