//! Test support: the bundled fixtures copied into a temporary directory as a
//! real Git working copy beside a copy of the backup store, the drgit binary
//! run against them, and snapshots of repository state to prove that a
//! failed run changed nothing.

#![allow(dead_code)]

pub mod fake_cluster;
pub mod fake_github;
pub mod fault_proxy;
pub mod git_http;
pub mod s3_server;
pub mod walgen;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const NOW: &str = "2026-11-26T04:00:00Z";
pub const MANIFEST: &str = "manifests/database/shared-pg.yaml";
/// Inside the fixture's recoverable window.
pub const TARGET: &str = "2026-11-26T03:02:38Z";

pub fn project() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// `<tmp>/repo` (a Git repo with one commit of fixtures/home-cluster)
    /// and `<tmp>/backup-store` with the recorded S3 LastModified times.
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(
            &project().join("fixtures/home-cluster"),
            &dir.path().join("repo"),
        );
        copy_dir(
            &project().join("fixtures/backup-store"),
            &dir.path().join("backup-store"),
        );
        apply_lastmodified(&dir.path().join("backup-store"));
        let f = Fixture { dir };
        f.git(&["init", "-q", "-b", "main"]);
        f.git(&["add", "-A"]);
        f.git(&["commit", "-q", "-m", "home cluster"]);
        f
    }

    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("backup-store")
    }

    pub fn manifest(&self) -> PathBuf {
        self.repo().join(MANIFEST)
    }

    pub fn read_manifest(&self) -> String {
        std::fs::read_to_string(self.manifest()).unwrap()
    }

    /// A bare repository `<tmp>/srv/home-cluster.git` holding `main`, as
    /// the `origin` remote at `url` (file:// when None).
    pub fn add_remote(&self, url: Option<&str>) -> PathBuf {
        let bare = self.dir.path().join("srv/home-cluster.git");
        std::fs::create_dir_all(&bare).unwrap();
        let run = |args: &[&str], dir: &Path| {
            let out = Command::new("git")
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "git {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["init", "-q", "--bare", "-b", "main"], &bare);
        run(&["config", "http.receivepack", "true"], &bare);
        let file_url = format!("file://{}", bare.display());
        self.git(&["remote", "add", "origin", url.unwrap_or(&file_url)]);
        self.git(&["push", "-q", "origin", "main:main", "--set-upstream"]);
        bare
    }

    /// Writes drgit.toml (backup store of the fixture plus `extra`), uncommitted.
    pub fn config(&self, extra: &str) {
        std::fs::write(
            self.repo().join("drgit.toml"),
            format!("[backup]\nurl = \"../backup-store\"\n\n{extra}"),
        )
        .unwrap();
    }

    /// Runs git in another directory, as someone else.
    pub fn git_in(&self, dir: &Path, args: &[&str]) -> String {
        run_git(dir, args, "Other", "other@example.com")
    }

    /// Replaces the manifest and commits it.
    pub fn set_manifest(&self, text: &str) {
        std::fs::write(self.manifest(), text).unwrap();
        self.git(&["commit", "-q", "-am", "manifest variant"]);
    }

    /// Points the Cluster's `destinationPath` (where CNPG restores from)
    /// at `dest`, committed: drgit refuses to check a catalog elsewhere.
    pub fn point_manifest_at(&self, dest: &str) {
        let text: String = self
            .read_manifest()
            .split_inclusive('\n')
            .map(|l| match l.find("destinationPath: ") {
                Some(i) => format!("{}destinationPath: {dest}\n", &l[..i]),
                None => l.to_string(),
            })
            .collect();
        if text != self.read_manifest() {
            self.set_manifest(&text);
        }
    }

    pub fn git(&self, args: &[&str]) -> String {
        run_git(&self.repo(), args, "Test", "test@example.com")
    }

    /// Runs drgit with `--repo <repo>` and a fixed clock.
    pub fn drgit(&self, args: &[&str]) -> Run {
        drgit_in(&self.repo(), args, &[])
    }

    pub fn drgit_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        drgit_in(&self.repo(), args, env)
    }

    /// Every file's bytes under the repo (outside .git) plus HEAD, branches
    /// and the index: equal before and after means nothing changed.
    pub fn state(&self) -> State {
        let mut files = BTreeMap::new();
        collect(&self.repo(), &self.repo(), &mut files);
        State {
            files,
            head: self.git(&["symbolic-ref", "-q", "HEAD"]),
            refs: self.git(&["for-each-ref", "--format=%(refname) %(objectname)"]),
            index: self.git(&["ls-files", "-s"]),
            status: self.git(&["status", "--porcelain"]),
        }
    }
}

/// Runs git against a bare repository (`--git-dir`), as the fake servers
/// do; its trimmed output, or None when git failed.
pub fn bare_git(bare: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(bare)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs the git CLI in `dir` as `name <email>`; panics with git's message on failure.
pub fn run_git(dir: &Path, args: &[&str], name: &str, email: &str) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", name)
        .env("GIT_AUTHOR_EMAIL", email)
        .env("GIT_COMMITTER_NAME", name)
        .env("GIT_COMMITTER_EMAIL", email)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[derive(Debug, PartialEq)]
pub struct State {
    pub files: BTreeMap<String, Vec<u8>>,
    pub head: String,
    pub refs: String,
    pub index: String,
    pub status: String,
}

impl State {
    /// Everything but the refs (a push that went through may leave its
    /// remote-tracking ref behind).
    pub fn files_and_head(&self) -> (&BTreeMap<String, Vec<u8>>, &str, &str, &str) {
        (&self.files, &self.head, &self.index, &self.status)
    }
}

fn collect(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().is_some_and(|n| n == ".git") {
            continue;
        }
        if p.is_dir() {
            collect(root, &p, out);
        } else {
            out.insert(
                p.strip_prefix(root).unwrap().display().to_string(),
                std::fs::read(&p).unwrap(),
            );
        }
    }
}

/// A journal's steps as `name status` (`merged done`, `fence running`).
pub fn step_states(journal: &serde_json::Value) -> Vec<String> {
    journal["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s["name"].as_str().unwrap(),
                s["status"].as_str().unwrap()
            )
        })
        .collect()
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts the run succeeded, showing what it printed when not.
    pub fn assert_ok(&self) {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
    }

    /// The same, passing the run on.
    pub fn ok(self) -> Run {
        self.assert_ok();
        self
    }

    /// Everything a user sees, for a snapshot: the exit status, stdout and
    /// stderr, with the temporary directory replaced by `[TMP]`.
    pub fn screen(&self, f: &Fixture) -> String {
        format!(
            "exit status: {}\n--- stdout\n{}--- stderr\n{}",
            self.code,
            redact(&self.stdout, f),
            redact(&self.stderr, f)
        )
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

pub fn drgit_in(repo: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_drgit"));
    // No credentials or git config of the machine's user leak into a test.
    let home = std::env::temp_dir().join("drgit-test-home");
    std::fs::create_dir_all(&home).unwrap();
    cmd.arg("--repo")
        .arg(repo)
        .args(args)
        .env("DRGIT_NOW", NOW)
        .env("HOME", &home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("NO_COLOR")
        .env_remove("GITHUB_TOKEN")
        .env_remove("GH_TOKEN")
        .env_remove("DRGIT_GIT_TOKEN")
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env_remove("KUBECONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    };
    assert_no_secret(repo, env, &run);
    run
}

/// Every run of every test: no credential handed to drgit (a token, an S3
/// key, a password, by its environment variable's name) and not the
/// kubeconfig's token reaches what it printed (stdout, stderr: logs,
/// errors, `--json`, OpenMetrics) or its journal.
pub fn assert_no_secret(repo: &Path, env: &[(&str, &str)], run: &Run) {
    let secret_name = |k: &str| {
        ["TOKEN", "SECRET", "PASSWORD", "ACCESS_KEY_ID"]
            .iter()
            .any(|w| k.contains(w))
    };
    let mut secrets: Vec<&str> = env
        .iter()
        .filter(|(k, v)| secret_name(k) && v.len() >= 6)
        .map(|(_, v)| *v)
        .collect();
    secrets.push("fake-kube-token");
    let journals: Vec<String> = ["journal.json", "journal.done.json"]
        .iter()
        .filter_map(|j| std::fs::read_to_string(repo.join(".git/drgit").join(j)).ok())
        .collect();
    for secret in secrets {
        for (what, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)]
            .into_iter()
            .chain(journals.iter().map(|j| ("the journal", j)))
        {
            assert!(
                !text.contains(secret),
                "a credential reached {what}: {text}"
            );
        }
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let t = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &t);
        } else {
            std::fs::copy(&p, &t).unwrap();
        }
    }
}

/// Sets each object's mtime to its recorded S3 LastModified (git keeps no
/// file times, so a fresh clone would otherwise say "now").
pub fn apply_lastmodified(store: &Path) {
    let index =
        std::fs::read_to_string(project().join("fixtures/backup-store.lastmodified")).unwrap();
    for line in index
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (key, time) = line.split_once('\t').unwrap();
        let ts: jiff::Timestamp = time.parse().unwrap();
        let f = std::fs::File::options()
            .write(true)
            .open(store.join(key))
            .unwrap();
        let secs = std::time::Duration::from_nanos(ts.as_nanosecond() as u64);
        f.set_modified(std::time::UNIX_EPOCH + secs).unwrap();
    }
}

/// Replaces the temporary directory in output with `[TMP]`.
pub fn redact(s: &str, f: &Fixture) -> String {
    let tmp = f.dir.path().canonicalize().unwrap();
    s.replace(&tmp.display().to_string(), "[TMP]")
        .replace(&f.dir.path().display().to_string(), "[TMP]")
}

/// A real barman-cloud archive for point-in-time tests in `bucket`
/// (tests/support/barman-pitr.sh: rows `zero`, `a`, `b`); each row's
/// insert time.
pub fn pitr_archive(
    endpoint: &str,
    bucket: &str,
    work: &Path,
) -> BTreeMap<String, jiff::Timestamp> {
    let out = Command::new(project().join("tests/support/barman-pitr.sh"))
        .args([endpoint, bucket, work.to_str().unwrap()])
        .env("AWS_ACCESS_KEY_ID", s3_server::KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", s3_server::SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "barman run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| {
            (
                n.to_string(),
                format!("{}Z", t.replacen(' ', "T", 1)).parse().unwrap(),
            )
        })
        .collect()
}
