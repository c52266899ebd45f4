//! Bad input is a feature: every refusal names what was wrong and what to
//! do, exits with the documented status, and leaves the working copy (file
//! bytes, HEAD, branches, index, status) exactly as it was.

mod common;

use common::{Fixture, TARGET, redact};

/// Runs drgit, expects `code`, proves the repo untouched, returns stderr.
fn refused(f: &Fixture, args: &[&str], code: i32) -> String {
    let before = f.state();
    let run = f.drgit(args);
    assert_eq!(
        run.code, code,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert_eq!(f.state(), before, "a refused run must change nothing");
    assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    redact(&run.stderr, f)
}

fn recover(f: &Fixture, target: &str, code: i32) -> String {
    refused(f, &["pg-recover", "--target-time", target], code)
}

#[test]
fn malformed_yaml_names_line_and_column() {
    let f = Fixture::new();
    f.set_manifest(
        &f.read_manifest()
            .replace("  instances: 2\n", "  instances: [2\n"),
    );
    let err = recover(&f, TARGET, 2);
    assert!(
        err.contains("manifests/database/shared-pg.yaml: malformed YAML at line"),
        "{err}"
    );
    insta::assert_snapshot!(err);
}

#[test]
fn no_cluster_with_that_name() {
    let f = Fixture::new();
    f.set_manifest(&f.read_manifest().replace(
        "  name: shared-pg\n  namespace",
        "  name: other-pg\n  namespace",
    ));
    let err = recover(&f, TARGET, 2);
    assert!(err.contains("named `shared-pg` (found: other-pg)"), "{err}");
}

#[test]
fn two_clusters_named_alike() {
    let f = Fixture::new();
    let text = f.read_manifest();
    let first_doc = text.split("\n---\n").next().unwrap().to_string();
    f.set_manifest(&format!("{text}---\n{first_doc}\n"));
    let err = recover(&f, TARGET, 2);
    assert!(
        err.contains("2 documents define a CNPG Cluster named `shared-pg` (documents 1, 3)"),
        "{err}"
    );
}

#[test]
fn neither_initdb_nor_recovery() {
    let f = Fixture::new();
    let text = f.read_manifest();
    let start = text.find("    initdb:").unwrap();
    let end = text.find("\n  managed:").unwrap();
    f.set_manifest(&format!(
        "{}    pg_basebackup:\n      source: origin\n{}",
        &text[..start],
        &text[end..]
    ));
    let err = recover(&f, TARGET, 2);
    assert!(err.contains("neither `spec.bootstrap.initdb` nor `spec.bootstrap.recovery` (found `spec.bootstrap` with \"pg_basebackup\")"), "{err}");
}

#[test]
fn both_initdb_and_recovery() {
    let f = Fixture::new();
    f.set_manifest(&f.read_manifest().replace(
        "  bootstrap:\n",
        "  bootstrap:\n    recovery:\n      source: old\n",
    ));
    let err = recover(&f, TARGET, 2);
    assert!(err.contains("has both `initdb` and `recovery`"), "{err}");
}

#[test]
fn unparsable_target_time() {
    let f = Fixture::new();
    let err = recover(&f, "last tuesday", 2);
    assert!(err.contains("`last tuesday` is not a time"), "{err}");
    let err = recover(&f, "2026-11-26 03:02:38", 2);
    assert!(err.contains("has no UTC offset"), "{err}");
}

#[test]
fn backup_location_that_disagrees_with_the_manifest() {
    // In-tree: the Cluster's destinationPath.
    let f = Fixture::new();
    let err = refused(
        &f,
        &[
            "--backup-url",
            "s3://elsewhere/",
            "pg-recover",
            "--target-time",
            TARGET,
        ],
        2,
    );
    assert!(
        err.contains("manifests/database/shared-pg.yaml: `spec.backup.barmanObjectStore.destinationPath` is s3://home-cluster-backup/cnpg/, but drgit reads the backups from s3://elsewhere/cnpg/"),
        "{err}"
    );
    // Plugin: the ObjectStore it names, found in another file of the repo.
    let f = Fixture::new();
    f.set_manifest(&f.read_manifest().replace(
        "  backup:\n    retentionPolicy: \"7d\"\n",
        "  plugins:\n    - name: barman-cloud.cloudnative-pg.io\n      isWALArchiver: true\n      parameters:\n        barmanObjectName: r2-store\n  backup:\n    retentionPolicy: \"7d\"\n",
    ).replace("    barmanObjectStore:\n", "    nothing:\n"));
    std::fs::write(
        f.repo().join("manifests/database/objectstore.yaml"),
        "apiVersion: barmancloud.cnpg.io/v1\nkind: ObjectStore\nmetadata:\n  name: r2-store\nspec:\n  configuration:\n    destinationPath: s3://plugin-bucket/cnpg/\n",
    )
    .unwrap();
    f.git(&["add", "-A"]);
    f.git(&["commit", "-qm", "object store"]);
    let err = refused(
        &f,
        &[
            "--backup-url",
            "s3://home-cluster-backup/",
            "pg-recover",
            "--target-time",
            TARGET,
        ],
        2,
    );
    assert!(
        err.contains("manifests/database/objectstore.yaml: `spec.configuration.destinationPath` of ObjectStore `r2-store` (named by `spec.plugins[0].parameters.barmanObjectName`) is s3://plugin-bucket/cnpg/"),
        "{err}"
    );
}

#[test]
fn target_in_the_future() {
    let f = Fixture::new();
    let err = recover(&f, "2026-11-27T00:00:00Z", 2);
    assert!(
        err.contains("is in the future (now is 2026-11-26T04:00:00Z)"),
        "{err}"
    );
}

#[test]
fn target_before_the_first_backup() {
    let f = Fixture::new();
    let err = recover(&f, "2026-11-26T03:02:00Z", 2);
    assert!(
        err.contains("before the end of the first usable base backup (2026-11-26T03:02:27Z)"),
        "{err}"
    );
    assert!(err.contains("no target backup found"), "{err}");
    insta::assert_snapshot!(err);
}

#[test]
fn target_after_the_last_wal() {
    let f = Fixture::new();
    let err = recover(&f, "2026-11-26T03:30:00Z", 2);
    assert!(
        err.contains("not before the last transaction in the archived WAL (committed at 2026-11-26T03:02:41.338873Z, in segment 00000001000000000000000A)"),
        "{err}"
    );
    insta::assert_snapshot!(err);
}

#[test]
fn target_after_the_last_commit_but_before_the_last_upload() {
    // The newest segment was archived 20 s after its last commit (at
    // archive_timeout, as PostgreSQL does when nothing fills it): a target
    // between the two is not reachable, whatever LastModified says.
    let f = Fixture::new();
    let last = f
        .store()
        .join("cnpg/shared-pg/wals/0000000100000000/00000001000000000000000A.gz");
    let at = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(
            "2026-11-26T03:03:01Z"
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_second() as u64,
        );
    std::fs::File::options()
        .write(true)
        .open(&last)
        .unwrap()
        .set_modified(at)
        .unwrap();
    let err = recover(&f, "2026-11-26T03:02:51Z", 2);
    assert!(
        err.contains("committed at 2026-11-26T03:02:41.338873Z"),
        "{err}"
    );
    // The last commit's own time is not reachable either: PostgreSQL stops
    // only before a commit later than the target. A microsecond earlier is.
    let err = recover(&f, "2026-11-26T03:02:41.338873Z", 2);
    assert!(
        err.contains("Pick a time before 2026-11-26T03:02:41.338873Z"),
        "{err}"
    );
    let ok = f.drgit(&[
        "--json",
        "pg-recover",
        "--target-time",
        "2026-11-26T03:02:41.338872Z",
        "--dry-run",
    ]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert_eq!(
        ok.json()["recovery_target_time"],
        "2026-11-26 03:02:41.338872+00"
    );
}

#[test]
fn target_inside_a_wal_gap() {
    let f = Fixture::new();
    std::fs::remove_file(
        f.store()
            .join("cnpg/shared-pg/wals/0000000100000000/000000010000000000000004.gz"),
    )
    .unwrap();
    let err = recover(&f, "2026-11-26T03:02:31Z", 2);
    assert!(err.contains("falls in a WAL gap"), "{err}");
    assert!(err.contains("from 000000010000000000000004"), "{err}");
    insta::assert_snapshot!(err);
    // Both sides of the gap still work.
    for t in ["2026-11-26T03:02:27Z", TARGET] {
        let run = f.drgit(&["--json", "pg-recover", "--target-time", t, "--dry-run"]);
        assert_eq!(run.code, 0, "{t}: {}", run.stderr);
    }
}

#[test]
fn empty_catalog() {
    let f = Fixture::new();
    let empty = f.dir.path().join("empty-store");
    std::fs::create_dir_all(&empty).unwrap();
    let err = refused(
        &f,
        &[
            "--backup-url",
            empty.to_str().unwrap(),
            "pg-recover",
            "--target-time",
            TARGET,
        ],
        1,
    );
    assert!(
        err.contains("no barman catalog under file://[TMP]/empty-store/cnpg/shared-pg/"),
        "{err}"
    );
}

#[test]
fn missing_store_directory() {
    let f = Fixture::new();
    let missing = f.dir.path().join("nowhere");
    let err = refused(
        &f,
        &["--backup-url", missing.to_str().unwrap(), "pg-recover"],
        1,
    );
    assert!(
        err.contains("the backup directory [TMP]/nowhere does not exist"),
        "{err}"
    );
}

#[test]
fn catalog_without_done_backups() {
    let f = Fixture::new();
    for id in ["20261126T030223", "20261126T030232"] {
        let info = f
            .store()
            .join(format!("cnpg/shared-pg/base/{id}/backup.info"));
        let text = std::fs::read_to_string(&info)
            .unwrap()
            .replace("status=DONE", "status=FAILED");
        std::fs::write(&info, text).unwrap();
    }
    let err = recover(&f, TARGET, 1);
    assert!(
        err.contains("no base backup completed (20261126T030223 FAILED, 20261126T030232 FAILED)"),
        "{err}"
    );
}

#[test]
fn alias_in_the_edit_path() {
    let f = Fixture::new();
    let text = f.read_manifest();
    let start = text.find("  bootstrap:\n").unwrap();
    let end = text.find("\n  managed:").unwrap();
    let aliased = format!(
        "{}  bootstrap: *boot\n{}",
        &text[..start].replace(
            "spec:\n",
            "x-defaults:\n  boot: &boot\n    initdb:\n      database: app\nspec:\n"
        ),
        &text[end..]
    );
    f.set_manifest(&aliased);
    let err = recover(&f, TARGET, 2);
    assert!(err.contains("`spec.bootstrap` is the alias *boot"), "{err}");
    insta::assert_snapshot!(err);
}

#[test]
fn dirty_manifest_is_refused() {
    let f = Fixture::new();
    std::fs::write(
        f.manifest(),
        f.read_manifest().replace("instances: 2", "instances: 3"),
    )
    .unwrap();
    let err = recover(&f, TARGET, 1);
    assert!(err.contains("manifests/database/shared-pg.yaml has uncommitted changes (modified in the working tree)"), "{err}");
    f.git(&["add", "-A"]);
    let err = recover(&f, TARGET, 1);
    assert!(err.contains("(staged)"), "{err}");
}

#[test]
fn existing_branch_is_refused() {
    let f = Fixture::new();
    f.git(&["branch", "drgit/pg-recover-20261126T040000Z"]);
    let err = recover(&f, TARGET, 1);
    assert!(
        err.contains("branch `drgit/pg-recover-20261126T040000Z` already exists"),
        "{err}"
    );
}

#[test]
fn unknown_config_key() {
    let f = Fixture::new();
    std::fs::write(
        f.repo().join("drgit.toml"),
        "[backup]\nurl = \"../backup-store\"\nregoin = \"auto\"\n",
    )
    .unwrap();
    f.git(&["commit", "-qam", "config typo"]);
    let err = recover(&f, TARGET, 2);
    assert!(
        err.contains("drgit.toml: line 3: unknown field `regoin`"),
        "{err}"
    );
}

#[test]
fn repo_that_is_not_the_top_of_a_working_copy() {
    let f = Fixture::new();
    let sub = f.repo().join("manifests");
    let run = common::drgit_in(
        &sub,
        &[
            "--config",
            f.repo().join("drgit.toml").to_str().unwrap(),
            "pg-recover",
            "--target-time",
            TARGET,
        ],
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("is not the top of its Git working copy"),
        "{}",
        run.stderr
    );
}

#[test]
fn revert_without_recovery_or_history() {
    let f = Fixture::new();
    let err = refused(&f, &["pg-revert"], 2);
    assert!(
        err.contains("`spec.bootstrap` is already `initdb`"),
        "{err}"
    );

    // A Cluster that was born in recovery has no initdb to go back to.
    let g = Fixture::new();
    let run = g.drgit(&["pg-recover", "--target-time", TARGET]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    g.git(&["checkout", "-q", "--orphan", "fresh"]);
    g.git(&["commit", "-qm", "born in recovery"]);
    let err = refused(&g, &["pg-revert"], 2);
    assert!(err.contains("no earlier version of the Cluster in this branch's Git history has `spec.bootstrap.initdb`"), "{err}");
}

#[test]
fn json_errors_are_json_too() {
    let f = Fixture::new();
    let run = f.drgit(&[
        "--json",
        "pg-recover",
        "--target-time",
        "2026-11-27T00:00:00Z",
    ]);
    assert_eq!(run.code, 2);
    let v = run.json();
    assert_eq!(v["exit_code"], 2);
    assert!(v["error"].as_str().unwrap().contains("in the future"));
}

#[test]
fn failed_write_puts_branch_and_head_back() {
    // An immutable manifest (chattr +i; even root cannot replace it) makes the
    // final write fail after the commit and the branch were made.
    let f = Fixture::new();
    let chattr = |flag: &str| {
        let ok = std::process::Command::new("chattr")
            .arg(flag)
            .arg(f.manifest())
            .status();
        assert!(
            ok.is_ok_and(|s| s.success()),
            "chattr {flag} failed: this test needs an ext4-like file system"
        );
    };
    chattr("+i");
    let before = f.state();
    let run = f.drgit(&["pg-recover", "--target-time", TARGET]);
    chattr("-i");
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("the branch and HEAD were put back as they were"),
        "{}",
        run.stderr
    );
    assert_eq!(f.state(), before);
}

#[test]
#[should_panic(expected = "a credential reached stderr")]
fn the_check_every_run_gets_finds_a_credential_that_was_printed() {
    let dir = tempfile::tempdir().unwrap();
    let run = common::Run {
        code: 1,
        stdout: String::new(),
        stderr: "error: GitHub refused ghp_printed_by_mistake\n".into(),
    };
    common::assert_no_secret(
        dir.path(),
        &[("GITHUB_TOKEN", "ghp_printed_by_mistake")],
        &run,
    );
}
