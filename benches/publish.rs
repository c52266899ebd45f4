//! Time to pull request: from starting `drgit pg-recover --pr` (release
//! binary) to the pull request existing on a FAKE GitHub on loopback, with a
//! real bare Git remote over file://. In the same run, as the ratio's
//! reference, what a person would do for the Git part alone: `git push` of
//! the same branch with the git CLI. Goal: under 1 s.
//!
//! `cargo build --release && cargo bench --bench publish`; figures go to
//! docs/benchmarks.md.

#[path = "../tests/common/mod.rs"]
mod common;

use common::fake_github;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const TOKEN: &str = "ghp_bench";

fn git(dir: &Path, args: &[&str]) {
    common::run_git(dir, args, "Bench", "bench@example.com");
}

/// A fresh working copy of the fixtures with a bare `origin` (the test
/// suite's own fixture); drgit.toml points at the fake GitHub.
fn setup(api: &str) -> (common::Fixture, std::path::PathBuf) {
    let f = common::Fixture::new();
    f.add_remote(None);
    f.config(&format!(
        "[forge]\napi_url = \"{api}\"\nrepo = \"home/home-cluster\"\n"
    ));
    let repo = f.repo();
    (f, repo)
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
        let (_fixture, repo) = setup(&gh.url);
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
