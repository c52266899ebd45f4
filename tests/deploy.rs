//! The in-cluster manifests in `deploy/`: every document deserializes into
//! its Kubernetes type (k8s-openapi; a field the type does not know is
//! lost in the round trip and fails here), the Role allows exactly what
//! `backups status` calls (src/cluster/rbac.rs), the CronJob's command
//! line is one drgit accepts, and every alert reads a metric drgit writes.

mod common;

use clap::Parser;
use drgit::manifest::yaml;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde::Deserialize;
use serde_json::Value;

/// Every document of every file in deploy/, as JSON.
fn documents() -> Vec<(String, Value)> {
    let dir = common::project().join("deploy");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let stream = yaml::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for doc in yaml::Resolver::stream(&stream) {
            out.push((path.display().to_string(), doc.to_json()));
        }
    }
    out
}

/// Deserializes into `T` and back; the result must be what was written.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(file: &str, doc: &Value) -> T {
    let t: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(
        &back, doc,
        "{file}: a field the type does not know, or a wrong shape"
    );
    t
}

// PrometheusRule is a CRD (monitoring.coreos.com/v1), not in k8s-openapi:
// its schema as prometheus-operator documents it, no unknown field allowed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PrometheusRule {
    api_version: String,
    kind: String,
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: RuleSpec,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    groups: Vec<RuleGroup>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    labels: std::collections::BTreeMap<String, String>,
    annotations: std::collections::BTreeMap<String, String>,
}

#[test]
fn every_manifest_deserializes_and_the_role_is_what_the_code_calls() {
    let docs = documents();
    let mut config = None;
    let (mut role, mut binding, mut account, mut cronjob, mut rules) =
        (None, None, None, None, None);
    for (file, doc) in &docs {
        match doc["kind"].as_str().unwrap_or_default() {
            "ConfigMap" => config = Some(typed::<ConfigMap>(file, doc)),
            "Role" => role = Some(typed::<Role>(file, doc)),
            "RoleBinding" => binding = Some(typed::<RoleBinding>(file, doc)),
            "ServiceAccount" => account = Some(typed::<ServiceAccount>(file, doc)),
            "CronJob" => cronjob = Some(typed::<CronJob>(file, doc)),
            "PrometheusRule" => {
                rules = Some(
                    serde_json::from_value::<PrometheusRule>(doc.clone())
                        .unwrap_or_else(|e| panic!("{file}: {e}")),
                )
            }
            other => panic!("{file}: a {other} nobody checks"),
        }
    }
    let (config, role, binding, account, cronjob, rules) = (
        config.unwrap(),
        role.unwrap(),
        binding.unwrap(),
        account.unwrap(),
        cronjob.unwrap(),
        rules.unwrap(),
    );

    // The Role: exactly what `backups status` calls, with the config the
    // CronJob runs with.
    let toml = &config.data.as_ref().unwrap()["drgit.toml"];
    let cfg = drgit::config::Config::parse(toml).unwrap();
    let needs = drgit::cluster::rbac::needs("backups-status", &cfg);
    let mut granted = Vec::new();
    for rule in role.rules.as_ref().unwrap() {
        for group in rule.api_groups.as_deref().unwrap_or_default() {
            for resource in rule.resources.as_deref().unwrap_or_default() {
                for verb in &rule.verbs {
                    let names = rule.resource_names.clone().unwrap_or_default();
                    granted.push((verb.clone(), group.clone(), resource.clone(), names));
                }
            }
        }
    }
    let wanted: Vec<_> = needs
        .iter()
        .map(|a| {
            (
                a.verb.to_string(),
                a.group.to_string(),
                a.resource.to_string(),
                a.name.clone().into_iter().collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_eq!(
        granted, wanted,
        "the Role grants exactly what the code calls"
    );
    for a in &needs {
        assert_eq!(
            role.metadata.namespace.as_deref(),
            Some(a.namespace.as_str())
        );
    }

    // Bound to the CronJob's ServiceAccount.
    let sa = account.metadata.name.clone().unwrap();
    let subject = &binding.subjects.as_ref().unwrap()[0];
    assert_eq!(
        (subject.kind.as_str(), subject.name.as_str()),
        ("ServiceAccount", sa.as_str())
    );
    assert_eq!(binding.role_ref.name, role.metadata.name.clone().unwrap());
    let pod = cronjob
        .spec
        .unwrap()
        .job_template
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(sa.as_str()));

    // One container, read-only root, and a command line drgit accepts.
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let mut argv = vec!["drgit".to_string()];
    argv.extend(c.args.clone().unwrap());
    let cli = drgit::cli::Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("the CronJob's arguments: {e}"));
    let line = argv.join(" ");
    assert!(
        line.contains("backups status --check --format openmetrics"),
        "{line}"
    );
    assert!(cli.config.is_some());
    let mounted: Vec<_> = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.clone())
        .collect();
    assert!(mounted.contains(&"/tmp".to_string()), "a writable HOME");

    // Every alert reads a metric drgit writes (from a real run's output).
    let f = common::Fixture::new();
    let run = f.drgit(&["backups", "status", "--format", "openmetrics"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let written: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(rules.api_version, "monitoring.coreos.com/v1");
    assert_eq!(rules.kind, "PrometheusRule");
    assert!(rules.metadata.name.is_some());
    let mut alerts = 0;
    for group in &rules.spec.groups {
        assert!(!group.name.is_empty());
        for rule in &group.rules {
            alerts += 1;
            assert!(rule.labels.contains_key("severity"), "{}", rule.alert);
            assert!(rule.annotations.contains_key("summary"), "{}", rule.alert);
            if let Some(d) = &rule.for_ {
                assert!(
                    d.ends_with('m') || d.ends_with('h'),
                    "{}: for {d}",
                    rule.alert
                );
            }
            let used: Vec<&str> = rule
                .expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("drgit_"))
                .collect();
            assert!(!used.is_empty(), "{} reads no drgit metric", rule.alert);
            for m in used {
                assert!(
                    written.contains(&m),
                    "{}: `{m}` is not a metric drgit writes ({written:?})",
                    rule.alert
                );
            }
        }
    }
    assert!(
        alerts >= 5,
        "base backup, WAL gap, etcd, Kanidm, the check itself"
    );
}

#[test]
fn the_release_workflow_builds_every_promised_binary_and_the_image() {
    let root = common::project();
    let text = std::fs::read_to_string(root.join(".github/workflows/release.yml")).unwrap();
    let wf = yaml::Resolver::stream(&yaml::parse(&text).unwrap())[0].to_json();
    let targets: Vec<&str> = wf["jobs"]["build"]["strategy"]["matrix"]["include"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["target"].as_str().unwrap())
        .collect();
    for t in [
        "x86_64-unknown-linux-musl",
        "aarch64-unknown-linux-musl",
        "x86_64-apple-darwin",
        "aarch64-apple-darwin",
    ] {
        assert!(targets.contains(&t), "{t} missing from {targets:?}");
    }
    // The feature the workflow builds with exists.
    let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(text.contains("--features vendored") && cargo.contains("\nvendored = ["));
    // Checksums published; the image built from the Dockerfile, per platform.
    assert!(text.contains("SHA256SUMS"));
    let docker = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    assert!(docker.contains("COPY bin/linux/${TARGETARCH}/drgit"));
    assert!(docker.contains("distroless/static"));
    let image = &wf["jobs"]["image"]["steps"];
    let build = image
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("docker/build-push-action"))
        })
        .unwrap();
    assert_eq!(build["with"]["platforms"], "linux/amd64,linux/arm64");
    // The image tag the CronJob pulls is the one the workflow pushes for
    // this version (semver without the `v`).
    assert!(text.contains("type=semver,pattern={{version}}"));
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap();
    let cronjob = std::fs::read_to_string(root.join("deploy/cronjob.yaml")).unwrap();
    assert!(
        cronjob.contains(&format!("image: ghcr.io/drgit/drgit:{version}\n")),
        "deploy/cronjob.yaml pulls the version being released ({version})"
    );
}
