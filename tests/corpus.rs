//! The editor against real-world CNPG Cluster manifests (`../shared/corpus/cnpg/`,
//! read in place, never copied): every file is either rewritten for recovery
//! (and verified) or refused with a specific message; reverting a recovery
//! gives back the original but for the new backup lineage.

use std::path::PathBuf;

use drgit::manifest::cnpg::{self, Bootstrap, RecoverySpec};
use drgit::manifest::yaml::{self, Resolver, Value};

fn corpus_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/cnpg");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("DRGIT_REQUIRE_CORPUS").is_none(),
        "DRGIT_REQUIRE_CORPUS is set but {} is missing",
        dir.display()
    );
    eprintln!("skipping: no corpus at {}", dir.display());
    None
}

fn cluster_names(stream: &yaml::Stream) -> Vec<String> {
    stream
        .docs
        .iter()
        .map(Resolver::document)
        .filter(|v| v.get("kind").and_then(Value::as_str) == Some("Cluster"))
        .filter_map(|v| {
            v.path(&["metadata", "name"])
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect()
}

/// Lines that differ between two texts (removed and added).
fn changed_lines(a: &str, b: &str) -> Vec<String> {
    similar::TextDiff::from_lines(a, b)
        .iter_all_changes()
        .filter(|c| c.tag() != similar::ChangeTag::Equal)
        .map(|c| format!("{}{}", c.tag(), c.value().trim_end()))
        .collect()
}

#[test]
fn corpus_recover_and_revert() {
    let Some(dir) = corpus_dir() else { return };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 30, "the corpus has 30 manifests");
    let mut report = String::new();
    let mut rewritten = 0;
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(file).unwrap();
        let stream = yaml::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        for cluster_name in cluster_names(&stream) {
            let line = match attempt(&text, &stream, &cluster_name) {
                Ok(summary) => {
                    rewritten += 1;
                    summary
                }
                Err(e) => format!("refused: {e}"),
            };
            report.push_str(&format!("{name} [{cluster_name}]\n  {line}\n"));
        }
    }
    assert!(
        rewritten >= 15,
        "only {rewritten} corpus Clusters could be rewritten"
    );
    insta::assert_snapshot!(report);
}

fn attempt(text: &str, stream: &yaml::Stream, name: &str) -> Result<String, String> {
    let doc = cnpg::find_cluster(stream, name).map_err(|e| e.to_string())?;
    let cluster = cnpg::inspect(stream, doc).map_err(|e| e.to_string())?;
    // A Cluster already in recovery keeps its lineage (drgit moves it only
    // when the store shows it is no longer empty).
    let new_lineage = match cluster.bootstrap {
        Bootstrap::Recovery { .. } => cluster.server_name.clone(),
        _ => cnpg::next_server_name(&cluster.server_name),
    };
    let source = match &cluster.bootstrap {
        Bootstrap::Recovery { source, .. } => source.clone(),
        Bootstrap::Initdb | Bootstrap::Default => "drgit-backup".to_string(),
    };
    let spec = RecoverySpec {
        source: &source,
        target_time: Some("2026-11-24 09:00:00.000000+00"),
        backup_id: Some("20261124T030000"),
        new_server_name: &new_lineage,
    };
    let rewrite = cnpg::rewrite_for_recovery(text, stream.clone(), &cluster, &spec)
        .map_err(|e| e.to_string())?;
    // The result parses and reads back as a recovery to the target.
    let new_stream = yaml::parse(&rewrite.text).expect("rewritten text parses");
    let new_doc = cnpg::find_cluster(&new_stream, name).unwrap();
    let after = cnpg::inspect(&new_stream, new_doc).expect("rewritten Cluster inspects");
    assert_eq!(
        after.bootstrap,
        Bootstrap::Recovery {
            source: source.clone(),
            target_time: Some("2026-11-24 09:00:00.000000+00".into()),
            backup_id: Some("20261124T030000".into()),
        },
        "{name}"
    );
    let changed = changed_lines(text, &rewrite.text).len();
    let mut summary = format!(
        "rewritten ({}): {changed} lines changed",
        match cluster.bootstrap {
            Bootstrap::Initdb => "initdb → recovery",
            Bootstrap::Default => "default initdb → recovery",
            Bootstrap::Recovery { .. } => "retarget",
        }
    );
    if !matches!(cluster.bootstrap, Bootstrap::Recovery { .. }) {
        // Revert with the original as history: back to the original text
        // except for the backup lineage.
        let initdb = cnpg::bootstrap_origin(text, name).expect("original is not in recovery");
        let reverted = cnpg::rewrite_for_revert(&rewrite.text, new_stream.clone(), &after, &initdb)
            .map_err(|e| format!("revert: {e}"))?;
        let left: Vec<String> = changed_lines(text, &reverted.text);
        assert!(
            left.iter().all(|l| l.contains("serverName")),
            "{name}: revert left more than the lineage changed: {left:#?}"
        );
        summary.push_str(&format!("; revert leaves {} lineage line(s)", left.len()));
    }
    Ok(summary)
}
