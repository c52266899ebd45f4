//! A Git change of several files: committed together, and undone together
//! when publishing fails, whichever file it is.

mod common;

use common::Fixture;
use drgit::scenario::publish::{self, ChangeSet, FileChange, Mode, Options};

const REPL: &str = "manifests/kanidm/configmap-repl.yaml";
const STS: &str = "manifests/kanidm/statefulset.yaml";

fn change(f: &Fixture) -> ChangeSet {
    let file = |p: &str, from: &str, to: &str| {
        let old = std::fs::read_to_string(f.repo().join(p)).unwrap();
        let new = old.replacen(from, to, 1);
        assert_ne!(old, new, "{p}");
        FileChange {
            path: p.into(),
            old,
            new,
        }
    };
    ChangeSet {
        files: vec![
            file(REPL, "\n", "\n# edited by the test\n"),
            file(STS, "replicas: 2", "replicas: 0"),
        ],
        changes: vec!["two files".into()],
        label: "test",
        branch_key: "kanidm".into(),
    }
}

#[test]
fn two_files_in_one_commit() {
    let f = Fixture::new();
    let repo = drgit::gitops::WorkRepo::open(&f.repo()).unwrap();
    let c = change(&f);
    let committed =
        publish::commit(&repo, Mode::Local, "drgit/test-kanidm", &c, "two files\n").unwrap();
    let shown = f.git(&[
        "show",
        "--stat",
        "--format=%s",
        &committed.commit.to_string(),
    ]);
    assert!(shown.contains(REPL) && shown.contains(STS), "{shown}");
    for file in &c.files {
        assert_eq!(
            std::fs::read_to_string(f.repo().join(&file.path)).unwrap(),
            file.new
        );
    }
    assert!(f.git(&["status", "--porcelain"]).trim().is_empty());
    assert_eq!(c.diffstat(), "+2 -1 lines");
}

#[test]
fn a_failed_push_undoes_every_file() {
    let f = Fixture::new();
    // A remote that is not there: the push fails after the commit.
    f.git(&[
        "remote",
        "add",
        "origin",
        "file:///nonexistent/home-cluster.git",
    ]);
    f.config("");
    let before = f.state();
    let ctx =
        drgit::scenario::Context::new(&f.repo(), None, None, common::NOW.parse().unwrap()).unwrap();
    let repo = drgit::gitops::WorkRepo::open(&f.repo()).unwrap();
    let c = change(&f);
    let opts = Options {
        mode: Mode::Push,
        ..Default::default()
    };
    let Err(err) = publish::commit_and_publish(
        &ctx,
        &repo,
        &opts,
        "drgit/test-kanidm",
        &c,
        ("two files\n", "t", "b"),
    ) else {
        panic!("the push must fail");
    };
    assert!(err.to_string().contains("nonexistent"), "{err}");
    assert!(
        err.to_string().contains("The local commit was undone"),
        "{err}"
    );
    let after = f.state();
    assert_eq!(after.files_and_head(), before.files_and_head());
}
