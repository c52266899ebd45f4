//! What a user sees: the exit status, stdout and stderr of whole runs,
//! snapshotted together (as uv's tests do), for the reports that are not
//! snapshotted elsewhere.

mod common;

use common::{Fixture, TARGET};

#[test]
fn pg_revert_report() {
    let f = Fixture::new();
    f.drgit(&["pg-recover", "--target-time", TARGET]).ok();
    let run = f.drgit(&["pg-revert", "--dry-run"]);
    insta::assert_snapshot!(run.screen(&f));
}

#[test]
fn an_error_as_json() {
    let f = Fixture::new();
    let run = f.drgit(&["--json", "pg-recover", "--target-time", "yesterday"]);
    insta::assert_snapshot!(run.screen(&f));
}

#[test]
fn the_download_line() {
    let f = Fixture::new();
    let out = f.dir.path().join("snapshot.db");
    let run = f.drgit(&[
        "backups",
        "download",
        "etcd",
        "latest",
        "-o",
        out.to_str().unwrap(),
    ]);
    insta::assert_snapshot!(run.screen(&f));
}

#[test]
fn status_with_no_run_yet() {
    let f = Fixture::new();
    let run = f.drgit(&["status"]);
    insta::assert_snapshot!(run.screen(&f));
}

#[test]
fn completions_and_man_page() {
    let f = Fixture::new();
    let bash = f.drgit(&["completions", "bash"]).ok();
    assert!(bash.stdout.contains("_drgit()"), "{}", bash.stdout);
    // The script is valid bash.
    let check = std::process::Command::new("bash")
        .args(["-n", "-c", &bash.stdout])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let man = f.drgit(&["man"]).ok();
    assert!(man.stdout.contains(".TH drgit 1"), "{}", man.stdout);
    assert!(man.stdout.contains("pg\\-recover"), "{}", man.stdout);
}
