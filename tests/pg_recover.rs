//! `drgit pg-recover` and `drgit pg-revert` end to end: the real binary on a
//! real Git working copy and the fixture's real barman catalog. Diffs are
//! snapshot-tested; every error case proves the repository unchanged.

mod common;

use common::{Fixture, MANIFEST, TARGET, redact};

fn diff_of(run: &common::Run) -> String {
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    run.json()["diff"].as_str().unwrap().to_string()
}

fn dry_run_diff(f: &Fixture) -> String {
    diff_of(&f.drgit(&["--json", "pg-recover", "--target-time", TARGET, "--dry-run"]))
}

#[test]
fn fixture_diff() {
    let f = Fixture::new();
    let before = f.state();
    insta::assert_snapshot!(dry_run_diff(&f));
    assert_eq!(f.state(), before, "a dry run changes nothing");
}

#[test]
fn human_report_on_the_fixture() {
    let f = Fixture::new();
    let run = f.drgit(&["pg-recover", "--target-time", TARGET, "--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    insta::assert_snapshot!(redact(&run.stdout, &f));
}

#[test]
fn multi_document_file() {
    let f = Fixture::new();
    let other = "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata:\n  name: other-pg\nspec:\n  instances: 1\n  bootstrap:\n    initdb: {}\n---\n";
    let cm = "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: after\ndata:\n  a: b\n";
    f.set_manifest(&format!("{other}{}{cm}", f.read_manifest()));
    insta::assert_snapshot!(dry_run_diff(&f));
}

#[test]
fn flow_style_bootstrap() {
    let f = Fixture::new();
    let text = f.read_manifest().replace(
        "  bootstrap:\n    initdb:\n      database: app\n      owner: app\n      # The app role's password comes from this Secret.\n      secret:\n        name: shared-pg-app\n",
        "  bootstrap: {initdb: {database: app, owner: app, secret: {name: shared-pg-app}}}\n",
    );
    assert!(text.contains("bootstrap: {initdb"));
    f.set_manifest(&text);
    insta::assert_snapshot!(dry_run_diff(&f));
}

#[test]
fn japanese_comments_before_the_edit() {
    let f = Fixture::new();
    let text = f
        .read_manifest()
        .replace(
            "# Shared PostgreSQL",
            "# 共有 PostgreSQL（アプリ用）。障害時は drgit で復旧する。\n# Shared PostgreSQL",
        )
        .replace(
            "  bootstrap:\n",
            "  # ブートストラップ: 通常は initdb、復旧時は recovery\n  bootstrap:\n",
        )
        .replace(
            "  backup:\n",
            "  # バックアップ先 — R2（毎日 3:00 JST）\n  backup:\n",
        );
    f.set_manifest(&text);
    insta::assert_snapshot!(dry_run_diff(&f));
}

#[test]
fn crlf_file() {
    let f = Fixture::new();
    let text = f.read_manifest().replace('\n', "\r\n");
    f.set_manifest(&text);
    let run = f.drgit(&["--json", "pg-recover", "--target-time", TARGET]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let after = f.read_manifest();
    assert!(
        !after.replace("\r\n", "").contains('\n'),
        "every line ends in CRLF"
    );
    insta::assert_snapshot!(run.json()["diff"].as_str().unwrap().replace('\r', "␍"));
}

#[test]
fn plugin_backup() {
    let f = Fixture::new();
    let text = f.read_manifest();
    let start = text.find("  backup:\n").unwrap();
    let end = text.find("  monitoring:").unwrap();
    let plugin = "  plugins:\n    - name: barman-cloud.cloudnative-pg.io\n      isWALArchiver: true\n      parameters:\n        barmanObjectName: r2-home-cluster-backup\n\n";
    f.set_manifest(&format!("{}{plugin}{}", &text[..start], &text[end..]));
    insta::assert_snapshot!(dry_run_diff(&f));
}

#[test]
fn already_recovering_changes_only_the_target() {
    let f = Fixture::new();
    let first = f.drgit(&["pg-recover", "--target-time", TARGET]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let run = f.drgit_env(
        &[
            "--json",
            "pg-recover",
            "--target-time",
            "2026-11-26T03:02:30Z",
            "--dry-run",
        ],
        &[("DRGIT_NOW", "2026-11-26T04:05:00Z")],
    );
    let diff = diff_of(&run);
    insta::assert_snapshot!(diff);
    assert_eq!(
        diff.lines()
            .filter(|l| l.starts_with(['+', '-']) && !l.starts_with("+++") && !l.starts_with("---"))
            .count(),
        4,
        "the pinned backup and the time, nothing else"
    );
    // The catalog read is still the old lineage, not the new one.
    assert_eq!(run.json()["catalog"]["lineage"], "shared-pg");
}

#[test]
fn recover_commits_on_a_branch_then_revert_restores_initdb() {
    let f = Fixture::new();
    let original = f.read_manifest();
    // An unrelated dirty file and an unrelated staged file stay as they are.
    std::fs::write(
        f.repo().join("manifests/kanidm/statefulset.yaml"),
        "edited by hand\n",
    )
    .unwrap();
    std::fs::write(f.repo().join("notes.txt"), "staged by hand\n").unwrap();
    f.git(&["add", "notes.txt"]);

    let run = f.drgit(&["--json", "pg-recover", "--target-time", TARGET]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = run.json();
    assert_eq!(out["branch"], "drgit/pg-recover-20261126T040000Z");
    assert_eq!(out["base_backup"], "20261126T030232");
    assert_eq!(out["new_lineage"], "shared-pg-2");
    assert_eq!(
        f.git(&["symbolic-ref", "--short", "HEAD"]).trim(),
        "drgit/pg-recover-20261126T040000Z"
    );
    assert_eq!(
        f.git(&["rev-parse", "HEAD"]).trim(),
        out["commit"].as_str().unwrap()
    );
    // The commit holds exactly the manifest; the working copy matches it.
    assert_eq!(
        f.git(&["show", "--name-only", "--format=", "HEAD"]).trim(),
        MANIFEST
    );
    assert_eq!(
        f.git(&["show", &format!("HEAD:{MANIFEST}")]),
        f.read_manifest()
    );
    let status = f.git(&["status", "--porcelain"]);
    assert!(
        status.contains(" M manifests/kanidm/statefulset.yaml"),
        "{status}"
    );
    assert!(status.contains("A  notes.txt"), "{status}");
    assert!(!status.contains("shared-pg"), "{status}");
    let message = f.git(&["log", "-1", "--format=%B"]);
    insta::assert_snapshot!("recover_commit_message", redact(&message, &f));

    let run = f.drgit_env(
        &["--json", "pg-revert"],
        &[("DRGIT_NOW", "2026-11-26T05:00:00Z")],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    insta::assert_snapshot!("revert_diff", run.json()["diff"].as_str().unwrap());
    assert_eq!(
        f.git(&["symbolic-ref", "--short", "HEAD"]).trim(),
        "drgit/pg-revert-20261126T050000Z"
    );
    // Back to the original, but for the new lineage.
    let reverted = f.read_manifest();
    let changed: Vec<_> = similar::TextDiff::from_lines(&original, &reverted)
        .iter_all_changes()
        .filter(|c| c.tag() != similar::ChangeTag::Equal)
        .map(|c| c.value().to_string())
        .collect();
    assert_eq!(changed, vec!["      serverName: shared-pg-2\n"]);
}

#[test]
fn json_output_is_one_document() {
    let f = Fixture::new();
    let out = f
        .drgit(&["--json", "pg-recover", "--target-time", TARGET, "--dry-run"])
        .json();
    assert_eq!(out["scenario"], "pg-recover");
    assert_eq!(out["dry_run"], true);
    assert_eq!(out["target_time"], TARGET);
    assert_eq!(out["catalog"]["base_backups"], 2);
    assert_eq!(
        out["catalog"]["windows"][0]["start"],
        "2026-11-26T03:02:26.121822Z"
    );
    // The window ends at the last commit in the archived WAL (pg_waldump:
    // `COMMIT 2026-11-26 03:02:41.338873 UTC` in segment …0A), not at the
    // segment's LastModified (03:02:41, whole seconds).
    assert_eq!(
        out["catalog"]["windows"][0]["end"],
        "2026-11-26T03:02:41.338873Z"
    );
    assert_eq!(out["recovery_target_time"], "2026-11-26 03:02:38.000000+00");
    assert_eq!(out["base_backup"], "20261126T030232");
    assert!(out["plan"].as_array().unwrap().len() >= 5);
    assert!(out["branch"].is_null() && out["commit"].is_null());
}

#[test]
fn no_target_recovers_to_the_end_of_wal() {
    let f = Fixture::new();
    let run = f.drgit(&["--json", "pg-recover", "--dry-run"]);
    let diff = diff_of(&run);
    // No targetTime: PostgreSQL replays everything archived; the backup
    // whose chain reaches the end is pinned.
    assert!(!diff.contains("targetTime"), "{diff}");
    assert!(diff.contains("backupID: \"20261126T030232\""), "{diff}");
    assert_eq!(run.json()["base_backup"], "20261126T030232");
}

#[test]
fn plain_time_with_timezone() {
    let f = Fixture::new();
    let run = f.drgit(&[
        "--json",
        "pg-recover",
        "--target-time",
        "2026-11-26 12:02:38",
        "--timezone",
        "Asia/Tokyo",
        "--dry-run",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["target_time"], TARGET);
}

#[test]
fn lineage_already_in_the_bucket_is_skipped() {
    let f = Fixture::new();
    let taken = f.store().join("cnpg/shared-pg-2/wals/0000000100000000");
    std::fs::create_dir_all(&taken).unwrap();
    std::fs::write(taken.join("000000010000000000000001.gz"), b"x").unwrap();
    let out = f
        .drgit(&["--json", "pg-recover", "--target-time", TARGET, "--dry-run"])
        .json();
    assert_eq!(out["new_lineage"], "shared-pg-3");
}

#[test]
fn a_rerun_moves_off_a_lineage_that_is_no_longer_empty() {
    let f = Fixture::new();
    let first = f.drgit(&["pg-recover", "--target-time", TARGET]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    f.git(&["checkout", "-q", "main"]);
    f.git(&[
        "merge",
        "-q",
        "--ff-only",
        "drgit/pg-recover-20261126T040000Z",
    ]);
    // Still empty: a re-run keeps the lineage it chose.
    let again = f
        .drgit(&[
            "--json",
            "pg-recover",
            "--target-time",
            "2026-11-26T03:02:30Z",
            "--dry-run",
        ])
        .json();
    assert!(again["new_lineage"].is_null(), "{again}");
    // The old primary archived into it meanwhile (Argo CD applied the new
    // serverName before it was fenced): CNPG would answer "Expected empty
    // archive", so the re-run moves on to the next empty lineage.
    let taken = f.store().join("cnpg/shared-pg-2/wals/0000000100000000");
    std::fs::create_dir_all(&taken).unwrap();
    std::fs::write(taken.join("00000001000000000000000B.gz"), b"x").unwrap();
    let run = f.drgit(&[
        "--json",
        "pg-recover",
        "--target-time",
        "2026-11-26T03:02:30Z",
        "--dry-run",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["new_lineage"], "shared-pg-3");
    let diff = diff_of(&run);
    assert!(
        diff.contains("-      serverName: shared-pg-2\n+      serverName: shared-pg-3"),
        "{diff}"
    );
    // The recovery still reads the old lineage.
    assert_eq!(run.json()["catalog"]["lineage"], "shared-pg");
}

#[test]
fn the_external_cluster_keeps_what_restore_uses() {
    // wal.maxParallel and wal.restoreAdditionalCommandArgs drive
    // barman-cloud-wal-restore; compression and archive arguments only
    // matter for writing.
    let f = Fixture::new();
    f.set_manifest(&f.read_manifest().replace(
        "      wal:\n        compression: gzip\n",
        "      wal:\n        compression: gzip\n        maxParallel: 8\n        archiveAdditionalCommandArgs: [\"--read-timeout=60\"]\n        restoreAdditionalCommandArgs: [\"--read-timeout=120\"]\n",
    ));
    let run = f.drgit(&["--json", "pg-recover", "--target-time", TARGET, "--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let diff = diff_of(&run);
    let external = &diff[diff.find("+  externalClusters:").expect("external cluster")..];
    assert!(
        external.contains("+        wal:\n+          maxParallel: 8\n+          restoreAdditionalCommandArgs: [\"--read-timeout=120\"]\n")
            || external.contains("+        wal:\n+          maxParallel: 8\n+          restoreAdditionalCommandArgs:\n+            - \"--read-timeout=120\"\n"),
        "{external}"
    );
    assert!(!external.contains("compression"), "{external}");
    assert!(
        !external.contains("archiveAdditionalCommandArgs"),
        "{external}"
    );
}

#[test]
fn write_keeps_the_file_mode() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    std::fs::set_permissions(f.manifest(), std::fs::Permissions::from_mode(0o640)).unwrap();
    let run = f.drgit(&["pg-recover", "--target-time", TARGET]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mode = std::fs::metadata(f.manifest())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o640);
    assert!(f.read_manifest().contains("recovery:"));
}
