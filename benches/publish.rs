//! Time to pull request: from starting `drgit pg-recover --pr` (release
//! binary) to the pull request existing on a FAKE GitHub on loopback, with a
//! real bare Git remote over file://. In the same run, as the ratio's
//! reference, what a person would do for the Git part alone: `git push` of
//! the same branch with the git CLI. Goal: under 1 s.
//!
//! `cargo build --release && cargo bench --bench publish`; figures go to
//! docs/benchmarks.md.

#[path = "../tests/common/fake_github.rs"]
mod fake_github;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const TOKEN: &str = "ghp_bench";

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// A fresh working copy with a bare `origin`; returns (tmp, repo, bare).
fn setup(root: &Path, api: &str) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let bare = tmp.path().join("remote.git");
    copy_dir(&root.join("fixtures/home-cluster"), &repo);
    copy_dir(
        &root.join("fixtures/backup-store"),
        &tmp.path().join("backup-store"),
    );
    std::fs::write(
        repo.join("drgit.toml"),
        format!("[backup]\nurl = \"../backup-store\"\n\n[forge]\napi_url = \"{api}\"\nrepo = \"home/home-cluster\"\n"),
    )
    .unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "home cluster"]);
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "-q", "--bare", "-b", "main"]);
    git(&repo, &["remote", "add", "origin", bare.to_str().unwrap()]);
    git(&repo, &["push", "-q", "origin", "main"]);
    (tmp, repo, bare)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = root.join("target/release/drgit");
    assert!(
        bin.exists(),
        "build the release binary first: cargo build --release"
    );
    let runs = 10;
    let mut drgit = Vec::new();
    let mut push = Vec::new();
    for _ in 0..runs {
        let gh = fake_github::FakeGitHub::start("home", "home-cluster", TOKEN);
        let (_tmp, repo, _bare) = setup(&root, &gh.url);
        let t = Instant::now();
        let out = Command::new(&bin)
            .args([
                "--repo",
                repo.to_str().unwrap(),
                "pg-recover",
                "--target-time",
                "2026-11-26T03:02:38Z",
                "--pr",
            ])
            .env("GITHUB_TOKEN", TOKEN)
            .env("DRGIT_NOW", "2026-11-26T04:00:00Z")
            .output()
            .unwrap();
        let elapsed = t.elapsed();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(gh.prs().len(), 1, "the pull request exists");
        drgit.push(elapsed);

        // Reference: pushing the same branch to a second bare remote with git.
        let second = repo.parent().unwrap().join("second.git");
        std::fs::create_dir_all(&second).unwrap();
        git(&second, &["init", "-q", "--bare", "-b", "main"]);
        let t = Instant::now();
        git(
            &repo,
            &[
                "push",
                "-q",
                second.to_str().unwrap(),
                "drgit/pg-recover-shared-pg",
            ],
        );
        push.push(t.elapsed());
    }
    let (d, p) = (median(drgit), median(push));
    println!("| step | median of {runs} |");
    println!("|---|---|");
    println!(
        "| drgit pg-recover --pr (catalog, edit, commit, push, PR on the fake GitHub) | {:.1} ms |",
        d.as_secs_f64() * 1e3
    );
    println!(
        "| git push of the same branch (git CLI) | {:.1} ms |",
        p.as_secs_f64() * 1e3
    );
    println!(
        "| ratio drgit / git push | {:.2}× |",
        d.as_secs_f64() / p.as_secs_f64()
    );
    println!(
        "\ngoal: time to PR under 1 s: {}",
        if d < Duration::from_secs(1) {
            "met"
        } else {
            "NOT met"
        }
    );
}
