//! `scripts/check-fresh`: every program the tests spawn has a row in
//! `scripts/test-needs` (what `scripts/test` installs on a fresh machine),
//! and a row taken away is found missing, naming where it is spawned.

mod common;

use std::process::Command;

use common::project;

fn check_fresh(needs: Option<&std::path::Path>) -> (i32, String) {
    let mut cmd = Command::new("python3");
    cmd.arg(project().join("scripts/check-fresh"));
    if let Some(n) = needs {
        cmd.arg("--needs").arg(n);
    }
    let out = cmd.output().expect("python3 runs scripts/check-fresh");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The table without the rows for `target`.
fn without(dir: &std::path::Path, target: &str) -> std::path::PathBuf {
    let table = std::fs::read_to_string(project().join("scripts/test-needs")).unwrap();
    let kept: String = table
        .lines()
        .filter(|l| {
            let target_col = l.split_whitespace().nth(1).unwrap_or("");
            target_col != target && !target_col.ends_with(&format!("/{target}"))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(kept, table, "no row for {target}");
    let p = dir.join(format!("needs-without-{target}"));
    std::fs::write(&p, kept).unwrap();
    p
}

#[test]
fn every_spawned_program_is_installed_by_scripts_test() {
    let (code, out) = check_fresh(None);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_missing_row_is_named_with_where_it_is_spawned() {
    let dir = tempfile::tempdir().unwrap();
    // Spawned by drgit itself (the etcd drill), found in src/.
    let (code, out) = check_fresh(Some(&without(dir.path(), "etcd")));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("src/scenario/drill.rs:") && out.contains("program `etcd`"),
        "{out}"
    );
    // Run by a test's shell script as `postgres` (inside an as_pg string).
    let (code, out) = check_fresh(Some(&without(dir.path(), "pg_basebackup")));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("tests/support/barman-timeline.sh:") && out.contains("`pg_basebackup`"),
        "{out}"
    );
    // A Python module imported by code a test hands to python3.
    let (code, out) = check_fresh(Some(&without(dir.path(), "python3:prometheus_client")));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("tests/doctor.rs:") && out.contains("Python module `prometheus_client`"),
        "{out}"
    );
}
