//! Times `drgit pg-recover --dry-run` (catalog read, window check, rewrite,
//! verification, diff) on the fixture and on a 5,000-line multi-document
//! manifest, in process and as the real binary, and — in the same run, as a
//! ratio — against what a scripted edit would at least do: PyYAML loading
//! the same file (`yaml.safe_load_all`, with libyaml when present), which
//! neither keeps comments nor checks any backup.
//!
//! `cargo bench --bench pg_recover`; figures go to docs/benchmarks.md.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use drgit::scenario::{Context, pg_recover};

#[path = "../tests/common/mod.rs"]
mod common;
use common::copy_dir;

const TARGET: &str = "2026-11-26T03:02:38Z";

fn big_manifest(cluster: &str) -> String {
    let mut out = String::new();
    let mut i = 0;
    while out.lines().count() < 2_500 {
        out.push_str(&format!(
            "# settings for app {i} — 設定\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-{i}\n  namespace: apps\ndata:\n  # log level\n  LOG_LEVEL: info\n  URL: \"https://app-{i}.home.example\"\n  list: [a, b, c]\n---\n"
        ));
        i += 1;
    }
    out.push_str(cluster);
    out.push_str("---\n");
    while out.lines().count() < 5_000 {
        out.push_str(&format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\nspec:\n  ports:\n    - port: 80\n      targetPort: 8080\n---\n"));
        i += 1;
    }
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<F: FnMut()>(runs: usize, mut f: F) -> Duration {
    f();
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small");
    let big = tmp.path().join("big");
    for dir in [&small, &big] {
        copy_dir(&root.join("fixtures/home-cluster"), &dir.join("repo"));
        copy_dir(
            &root.join("fixtures/backup-store"),
            &dir.join("backup-store"),
        );
    }
    let manifest = "manifests/database/shared-pg.yaml";
    let cluster = std::fs::read_to_string(small.join("repo").join(manifest)).unwrap();
    let cluster_doc = cluster.split("\n---\n").next().unwrap().to_string() + "\n";
    let big_text = big_manifest(&cluster_doc);
    std::fs::write(big.join("repo").join(manifest), &big_text).unwrap();

    let bin = root.join("target/release/drgit");
    let has_bin = bin.exists();
    let has_pyyaml = Command::new("python3")
        .args(["-c", "import yaml"])
        .status()
        .is_ok_and(|s| s.success());
    let now: jiff::Timestamp = "2026-11-26T04:00:00Z".parse().unwrap();

    println!(
        "| manifest | lines | drgit in process | drgit binary | PyYAML safe_load_all | in-process / PyYAML |"
    );
    println!("|---|---|---|---|---|---|");
    for (label, dir) in [("fixture", &small), ("5,000-line multi-document", &big)] {
        let repo = dir.join("repo");
        let lines = std::fs::read_to_string(repo.join(manifest))
            .unwrap()
            .lines()
            .count();
        let ctx = Context::new(&repo, None, None, now).unwrap();
        let args = pg_recover::Args {
            target_time: Some(TARGET.into()),
            timezone: None,
            dry_run: true,
            ..Default::default()
        };
        let lib = time(50, || {
            pg_recover::run(&ctx, &args).unwrap();
        });
        let binary = if has_bin {
            Some(time(20, || {
                let s = Command::new(&bin)
                    .args([
                        "--repo",
                        repo.to_str().unwrap(),
                        "--json",
                        "pg-recover",
                        "--target-time",
                        TARGET,
                        "--dry-run",
                    ])
                    .env("DRGIT_NOW", "2026-11-26T04:00:00Z")
                    .output()
                    .unwrap();
                assert!(s.status.success());
            }))
        } else {
            None
        };
        // PyYAML: time the load inside Python, so interpreter start-up does not count against it.
        let py = if has_pyyaml {
            let script = format!(
                "import time, yaml\nL = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)\ntext = open({:?}).read()\nts = []\nfor _ in range(50):\n    t = time.perf_counter(); list(yaml.load_all(text, Loader=L)); ts.append(time.perf_counter() - t)\nts.sort(); print(ts[len(ts)//2])",
                repo.join(manifest).display().to_string()
            );
            let out = Command::new("python3")
                .args(["-c", &script])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<f64>()
                .ok()
                .map(Duration::from_secs_f64)
        } else {
            None
        };
        let fmt = |d: Option<Duration>| {
            d.map(|d| format!("{:.2} ms", d.as_secs_f64() * 1e3))
                .unwrap_or_else(|| "n/a".into())
        };
        let ratio = py
            .map(|p| format!("{:.2}×", lib.as_secs_f64() / p.as_secs_f64()))
            .unwrap_or_else(|| "n/a".into());
        println!(
            "| {label} | {lines} | {} | {} | {} | {ratio} |",
            fmt(Some(lib)),
            fmt(binary),
            fmt(py)
        );
    }
    if !has_bin {
        println!("\n(build the release binary first for the binary column: cargo build --release)");
    }
}
