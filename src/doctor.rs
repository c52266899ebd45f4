//! `drgit doctor`: on an ordinary day, whether Saturday's recovery would
//! work. Each check is one line, ok / warn / fail, with the fix; nothing
//! is written anywhere (the plans are dry runs, the push is a connection
//! for pushing that sends nothing, RBAC is asked, not tried).
//!
//! Areas, in the order a recovery needs them: the configuration and the
//! paths it names; each procedure planned on the repository's manifests;
//! the backup store (`backups status --check`); the Git remote and the
//! GitHub credentials; the Kubernetes API and RBAC for every call the
//! procedures make ([`crate::cluster::rbac`]); the Argo CD Applications;
//! talosctl and the control-plane nodes.

use std::path::Path;

use serde::Serialize;

use crate::cluster::{Kube, rbac};
use crate::error::Error;
use crate::scenario::{self, Context};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub area: &'static str,
    pub name: String,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    pub ok: usize,
    pub warn: usize,
    pub fail: usize,
}

struct Checks(Vec<Check>);

impl Checks {
    fn push(
        &mut self,
        area: &'static str,
        name: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
        fix: Option<String>,
    ) {
        self.0.push(Check {
            area,
            name: name.into(),
            status,
            detail: detail.into(),
            fix,
        });
    }
    fn ok(&mut self, area: &'static str, name: impl Into<String>, detail: impl Into<String>) {
        self.push(area, name, Status::Ok, detail, None);
    }
    fn warn(
        &mut self,
        area: &'static str,
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(area, name, Status::Warn, detail, Some(fix.into()));
    }
    fn fail(
        &mut self,
        area: &'static str,
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(area, name, Status::Fail, detail, Some(fix.into()));
    }
}

/// Runs every check.
pub fn run(ctx: &Context) -> Report {
    let mut c = Checks(Vec::new());
    config(ctx, &mut c);
    plans(ctx, &mut c);
    store(ctx, &mut c);
    git(ctx, &mut c);
    kubernetes(ctx, &mut c);
    talos(ctx, &mut c);
    let count = |s| c.0.iter().filter(|k| k.status == s).count();
    Report {
        ok: count(Status::Ok),
        warn: count(Status::Warn),
        fail: count(Status::Fail),
        checks: c.0,
    }
}

/// The report for a configuration that does not load: one failing line.
pub fn config_error(e: &Error) -> Report {
    Report {
        checks: vec![Check {
            area: "config",
            name: "configuration".into(),
            status: Status::Fail,
            detail: e.to_string(),
            fix: Some("correct drgit.toml at the line named (`drgit --help` lists the commands; docs/configuration in the README lists the settings)".into()),
        }],
        ok: 0,
        warn: 0,
        fail: 1,
    }
}

fn config(ctx: &Context, c: &mut Checks) {
    if let Some(file) = &ctx.config_file {
        c.ok(
            "config",
            "configuration",
            format!("{} read", file.display()),
        );
    } else {
        c.warn(
            "config",
            "configuration",
            "no drgit.toml: every setting is its default",
            "write drgit.toml at the repository's top (see the README's configuration section)",
        );
    }
    let cfg = &ctx.config;
    let in_repo = [
        ("[postgres] manifest", &cfg.postgres.manifest),
        (
            "[kanidm] statefulset_manifest",
            &cfg.kanidm.statefulset_manifest,
        ),
        ("[kanidm] repl_configmap", &cfg.kanidm.repl_configmap),
    ];
    for (setting, rel) in in_repo {
        let path = ctx.repo_dir.join(rel);
        if path.is_file() {
            c.ok("config", setting, rel.display().to_string());
        } else {
            c.fail(
                "config",
                setting,
                format!("{} is not a file in the repository", rel.display()),
                format!("set `{setting}` to the manifest's path relative to the repository's top"),
            );
        }
    }
    let outside: [(&str, Option<&Path>); 2] = [
        ("[forge] app_key_file", cfg.forge.app_key_file.as_deref()),
        ("[talos] talosconfig", cfg.talos.talosconfig.as_deref()),
    ];
    for (setting, path) in outside {
        if let Some(path) = path {
            if path.is_file() {
                c.ok("config", setting, path.display().to_string());
            } else {
                c.fail(
                    "config",
                    setting,
                    format!("{} does not exist", path.display()),
                    format!("point `{setting}` at the file, or remove the setting"),
                );
            }
        }
    }
}

/// The fix for a plan that failed: what its error says to do, and where.
fn plan_fix(procedure: &str) -> String {
    format!(
        "run `drgit {procedure} --dry-run` to see the whole error; fix what it names before an outage needs it"
    )
}

fn plans(ctx: &Context, c: &mut Checks) {
    use scenario::{etcd_recover, kanidm_recert, kanidm_restore, pg_recover};
    match pg_recover::run(
        ctx,
        &pg_recover::Args {
            dry_run: true,
            ..Default::default()
        },
    ) {
        Ok(o) => c.ok(
            "plans",
            "pg-recover",
            format!(
                "planned on {}: {}",
                o.manifest,
                o.changes
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "no change".into())
            ),
        ),
        Err(e) => c.fail("plans", "pg-recover", e.to_string(), plan_fix("pg-recover")),
    }

    // kanidm-recert with the certificate the manifest already trusts for
    // each pod: the manifest, its TOML and the certificate are read as a
    // real run reads them.
    match kanidm_recert::ReplManifest::read(ctx) {
        Err(e) => c.fail(
            "plans",
            "kanidm-recert",
            e.to_string(),
            plan_fix("kanidm-recert --pod <pod> --certificate <file>"),
        ),
        Ok(m) => {
            let sts = &ctx.config.kanidm.statefulset;
            // Every pod the StatefulSet manifest asks for (two when it
            // cannot be read: kanidm-restore's check names that).
            let replicas =
                std::fs::read_to_string(ctx.repo_dir.join(&ctx.config.kanidm.statefulset_manifest))
                    .ok()
                    .and_then(|t| crate::manifest::yaml::parse(&t).ok())
                    .and_then(|s| crate::manifest::statefulset::find(&s, sts).ok())
                    .map_or(2, |f| f.replicas.max(1));
            for i in 0..replicas {
                let pod = format!("{sts}-{i}");
                let name = format!("kanidm-recert {pod}");
                let Some(origin) = crate::manifest::kanidm::origin_of(&m.stream, &pod) else {
                    c.fail("plans", name, format!("{}: no `[replication] origin` names {pod}", m.rel_path.display()), "give each pod's settings its own `origin = \"repl://<pod>.<service>:8444\"`");
                    continue;
                };
                let Some(cert) = crate::manifest::kanidm::partner_certs_for(&m.stream, &origin)
                    .into_iter()
                    .next()
                else {
                    c.fail(
                        "plans",
                        name,
                        format!(
                            "{}: no pod trusts a `partner_cert` for {origin}",
                            m.rel_path.display()
                        ),
                        "set the partner's `partner_cert` under `[replication.\"<origin>\"]`",
                    );
                    continue;
                };
                let args = kanidm_recert::Args {
                    pod: pod.clone(),
                    certificate: kanidm_recert::CertSource::Given {
                        text: cert,
                        from: format!("the partner certificate in {}", m.rel_path.display()),
                    },
                    dry_run: true,
                    publish: Default::default(),
                    wait: false,
                    yes: false,
                };
                match kanidm_recert::run(ctx, &args) {
                    Ok(_) => c.ok("plans", name, format!("{origin}: the trusted certificate reads and the manifest can be rewritten")),
                    Err(e) => c.fail("plans", name, e.to_string(), plan_fix(&format!("kanidm-recert --pod {pod} --certificate <file>"))),
                }
            }
        }
    }

    match kanidm_restore::run(
        ctx,
        &kanidm_restore::Args {
            backup: "latest".into(),
            pod: format!("{}-0", ctx.config.kanidm.statefulset),
            image: None,
            dry_run: true,
            publish: Default::default(),
            yes: false,
            show_plan: None,
        },
    ) {
        Ok(o) => c.ok(
            "plans",
            "kanidm-restore",
            format!(
                "the newest backup downloads and verifies; {} steps planned",
                o.plan.len()
            ),
        ),
        Err(e) => c.fail(
            "plans",
            "kanidm-restore",
            e.to_string(),
            plan_fix("kanidm-restore"),
        ),
    }

    // etcd-recover refuses to plan while etcd is healthy (as it should):
    // its snapshot is checked here, talosctl and the nodes below.
    let snapshot = tempfile::tempdir()
        .map_err(|e| e.to_string())
        .and_then(|d| {
            etcd_recover::snapshot(
                ctx,
                &etcd_recover::Args {
                    snapshot: "latest".into(),
                    data_dir_copy: false,
                    no_surviving_copy: false,
                    dry_run: true,
                    yes: false,
                    show_plan: None,
                },
                d.path(),
            )
            .map_err(|e| e.to_string())
        });
    match snapshot {
        Ok(s) => c.ok(
            "plans",
            "etcd-recover",
            format!(
                "snapshot {} ({} bytes{}) downloads and verifies",
                s.source,
                s.size,
                s.taken.map(|t| format!(", taken {t}")).unwrap_or_default()
            ),
        ),
        Err(e) => c.fail(
            "plans",
            "etcd-recover",
            e,
            "check `[talos] etcd_prefix` and that `talosctl etcd snapshot` uploads run",
        ),
    }
}

fn store(ctx: &Context, c: &mut Checks) {
    let store = match ctx.open_store() {
        Ok(s) => s,
        Err(e) => {
            c.fail("store", "backup store", e.to_string(), "check `[backup] url`, `endpoint` and the S3 credentials drgit uses (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or the cluster's Secret)");
            return;
        }
    };
    match crate::health::collect(store.as_ref(), &ctx.config, ctx.now) {
        Ok(report) => {
            let problems = report.problems();
            let lineages = report.postgres.len();
            if problems.is_empty() {
                c.ok("store", "backups status --check", format!("{}: {lineages} PostgreSQL lineage(s), {} etcd snapshot(s), {} Kanidm backup(s), no problem", report.store, report.etcd.count, report.kanidm.count));
            } else {
                c.fail("store", "backups status --check", problems.join("; "), "`drgit backups status` shows each problem; fix the backup job or schedule that stopped");
            }
        }
        Err(e) => c.fail(
            "store",
            "backups status --check",
            e.to_string(),
            "check `[backup] url` and that the credentials may list and read the bucket",
        ),
    }
}

fn git(ctx: &Context, c: &mut Checks) {
    let repo = match crate::gitops::WorkRepo::open(&ctx.repo_dir) {
        Ok(r) => r,
        Err(e) => {
            c.fail(
                "git",
                "repository",
                e.to_string(),
                "run drgit in the GitOps repository's working copy (or pass --repo)",
            );
            return;
        }
    };
    let remote = &ctx.config.git.remote;
    let url = match repo.remote_url(remote) {
        Ok(u) => u,
        Err(e) => {
            c.fail(
                "git",
                format!("remote {remote}"),
                e.to_string(),
                format!("add the remote (`git remote add {remote} <url>`) or set `[git] remote`"),
            );
            return;
        }
    };
    match repo.check_push(remote) {
        Ok(refs) => c.ok("git", format!("push to {remote}"), format!("{url} accepts a push connection ({refs} refs listed; nothing sent)")),
        Err(e) => c.fail("git", format!("push to {remote}"), e.to_string(), "check the remote's URL (`git remote -v`) and that drgit's credentials may push there: DRGIT_GIT_TOKEN or GITHUB_TOKEN for HTTPS, an ssh-agent key for SSH"),
    }
    let forge = &ctx.config.forge;
    let app =
        forge.app_id.is_some() && forge.app_key_file.is_some() && forge.installation_id.is_some();
    let gh = match crate::gitops::forge::GitHub::connect(forge, &url) {
        Ok(gh) => gh,
        Err(crate::gitops::forge::ForgeError::NoCredentials) => {
            c.warn("git", "GitHub", "no GITHUB_TOKEN / GH_TOKEN and no GitHub App configured: --pr cannot open pull requests", "set GITHUB_TOKEN (Contents and Pull requests: read and write) or `[forge] app_id`, `app_key_file`, `installation_id`");
            return;
        }
        Err(e) => {
            c.fail(
                "git",
                "GitHub",
                e.to_string(),
                "check `[forge] repo` and `api_url`",
            );
            return;
        }
    };
    match gh.repo_permissions() {
        Ok(Some(perms)) => {
            let has = |k: &str| perms.iter().any(|(n, v)| n == k && *v);
            if has("push") {
                c.ok("git", "GitHub", format!("{}: the token may push (contents write) and so open pull requests", gh.full_name()));
            } else {
                c.fail("git", "GitHub", format!("{}: the token may not push (permissions: {})", gh.full_name(), perms.iter().filter(|(_, v)| *v).map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ")), "give the token Contents and Pull requests: read and write on this repository");
            }
        }
        Ok(None) if app => c.ok("git", "GitHub", format!("{}: the App's installation token reads the repository (the App needs Contents and Pull requests: read and write)", gh.full_name())),
        Ok(None) => c.warn("git", "GitHub", format!("{}: GitHub did not say what the token may do", gh.full_name()), "check that the token has Contents and Pull requests: read and write"),
        Err(e) => c.fail("git", "GitHub", e.to_string(), "check the token (GITHUB_TOKEN / GH_TOKEN) or the App's installation"),
    }
}

fn kubernetes(ctx: &Context, c: &mut Checks) {
    let kube = match Kube::connect(ctx.kubeconfig.as_deref(), ctx.kube_context.as_deref()) {
        Ok(k) => k,
        Err(e) => {
            c.fail(
                "kubernetes",
                "API",
                e.to_string(),
                "point --kubeconfig / --context (or KUBECONFIG) at the cluster",
            );
            return;
        }
    };
    match kube.server_version() {
        Ok(v) => c.ok("kubernetes", "API", format!("the API server answers ({v})")),
        Err(e) => {
            c.fail(
                "kubernetes",
                "API",
                e.to_string(),
                "check the kubeconfig's server and credentials, and the network to the cluster",
            );
            return;
        }
    }
    for procedure in rbac::PROCEDURES {
        // The Secret is read only when the environment has no S3 keys.
        if procedure == "backups-status" && ctx.s3_credentials_are_own() {
            continue;
        }
        let needs = rbac::needs(procedure, &ctx.config);
        let mut denied = Vec::new();
        let mut failed = false;
        for access in &needs {
            match kube.may(access) {
                Ok((true, _)) => {}
                Ok((false, _)) => denied.push(access.clone()),
                Err(e) => {
                    c.fail(
                        "kubernetes",
                        format!("RBAC {procedure}"),
                        e.to_string(),
                        "the API must answer SelfSubjectAccessReview (authorization.k8s.io/v1)",
                    );
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            continue;
        }
        if denied.is_empty() {
            c.ok(
                "kubernetes",
                format!("RBAC {procedure}"),
                format!("{} access(es) allowed", needs.len()),
            );
        }
        for access in denied {
            c.fail(
                "kubernetes",
                format!("RBAC {procedure}: {} {}", access.verb, access.resource),
                format!("may not {}", access.describe()),
                format!(
                    "grant it to the user or ServiceAccount drgit runs as; check with `{}`",
                    access.can_i()
                ),
            );
        }
    }
    let cfg = &ctx.config;
    let apps = [
        (
            "postgres",
            cfg.argocd.application.as_deref(),
            &cfg.postgres.manifest,
        ),
        (
            "kanidm",
            cfg.kanidm.application.as_deref(),
            &cfg.kanidm.repl_configmap,
        ),
    ];
    for (what, name, manifest) in apps {
        let dir = manifest
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let check = format!("Argo CD {what}");
        match kube.find_application(&cfg.argocd.namespace, name, &dir) {
            Ok(app) if !app.automated => c.warn("argocd", check, format!("Application {} deploys {dir} without automated sync", app.name), "drgit starts each sync itself; turn on `syncPolicy.automated` to have Argo CD follow merges"),
            Ok(app) if !app.self_heal => c.warn("argocd", check, format!("Application {} auto-syncs {dir}; selfHeal is off", app.name), "drgit starts the sync after a delete itself; with selfHeal on, Argo CD also recreates what drgit deletes"),
            Ok(app) => c.ok("argocd", check, format!("Application {} auto-syncs {dir} with selfHeal", app.name)),
            Err(e) => c.fail("argocd", check, e.to_string(), format!("create the Argo CD Application for {dir}, or name it in `[argocd] application` / `[kanidm] application`")),
        }
    }
}

fn talos(ctx: &Context, c: &mut Checks) {
    let t = &ctx.config.talos;
    let talos = scenario::etcd_recover::talosctl(ctx);
    let client = match talos.run(&[], &["version", "--client"]) {
        Ok(out) if out.success => crate::cluster::talos::parse_version(&out.stdout).client,
        Ok(out) => {
            c.fail(
                "talos",
                "talosctl",
                format!(
                    "`{}` failed: {}",
                    talos.command_line(&[], &["version", "--client"]),
                    out.tail(3)
                ),
                "check the talosctl binary and `[talos] talosconfig` / `context`",
            );
            return;
        }
        Err(e) => {
            c.fail("talos", "talosctl", e.to_string(), "install talosctl of the cluster's Talos version, or set `[talos] talosctl` to its path");
            return;
        }
    };
    let client = client.unwrap_or_else(|| "unknown".into());
    c.ok("talos", "talosctl", format!("{} {client}", t.talosctl));
    if t.control_plane.is_empty() {
        c.warn(
            "talos",
            "control plane",
            "`[talos] control_plane` is empty: etcd-recover cannot run",
            "list the control-plane nodes' addresses in `[talos] control_plane`",
        );
        return;
    }
    let out = match talos.run(&t.control_plane, &["version"]) {
        Ok(out) => out,
        Err(e) => {
            c.fail("talos", "control plane", e.to_string(), "install talosctl");
            return;
        }
    };
    endpoints(ctx, c);
    let versions = crate::cluster::talos::parse_version(&out.stdout);
    let down = crate::cluster::talos::unreachable(&out.stderr);
    for node in &t.control_plane {
        let name = format!("node {node}");
        match versions.servers.iter().find(|(n, _)| n == node) {
            Some((_, tag)) if *tag != client => c.warn("talos", name, format!("answers, Talos {tag}; talosctl is {client}"), "use the talosctl release that matches the nodes' Talos version"),
            Some((_, tag)) => c.ok("talos", name, format!("answers, Talos {tag}")),
            None if down.iter().any(|d| d == node) => c.fail("talos", name, "does not answer (code = Unavailable)", "check that the node is up and reachable on port 50000, and the talosconfig's endpoints"),
            None => c.fail("talos", name, format!("no version in talosctl's answer: {}", out.tail(3)), "check the talosconfig's endpoints and certificates"),
        }
    }
}

/// The endpoints talosctl talks to must be the control planes themselves:
/// Talos's VIP follows etcd and goes with it ("Don't use the VIP as the
/// `endpoint` in the `talosconfig`", talos website/content/v1.11/
/// talos-guides/network/vip.md), and so would a load balancer in front of
/// the API servers. `[talos] endpoints` when set (passed as `-e`), else
/// the talosconfig's context. Only the endpoints are read from it.
fn endpoints(ctx: &Context, c: &mut Checks) {
    let t = &ctx.config.talos;
    let (endpoints, from) = if t.endpoints.is_empty() {
        match talosconfig_endpoints(ctx) {
            Some(found) => found,
            None => return,
        }
    } else {
        (t.endpoints.clone(), "`[talos] endpoints`".to_string())
    };
    let others: Vec<&String> = endpoints
        .iter()
        .filter(|e| !t.control_plane.contains(&crate::cluster::talos::host_of(e)))
        .collect();
    if others.is_empty() {
        c.ok(
            "talos",
            "endpoints",
            format!("{} (from {from}): control planes", endpoints.join(", ")),
        );
    } else {
        c.warn(
            "talos",
            "endpoints",
            format!(
                "{} (from {from}) not one of `[talos] control_plane`: a VIP (or a load balancer) goes when etcd goes, and talosctl could not reach the nodes to recover it",
                others.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
            "set `[talos] endpoints` to the control planes' own addresses (etcd-recover passes them with -e), or put those in the talosconfig",
        );
    }
}

/// The endpoints of the talosconfig's context (`[talos] talosconfig`, else
/// $TALOSCONFIG, else ~/.talos/config; `[talos] context`, else its
/// `context`), and where they came from.
fn talosconfig_endpoints(ctx: &Context) -> Option<(Vec<String>, String)> {
    let t = &ctx.config.talos;
    let path = t
        .talosconfig
        .clone()
        .or_else(|| std::env::var_os("TALOSCONFIG").map(Into::into))
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".talos/config")))?;
    let text = std::fs::read_to_string(&path).ok()?;
    let doc = crate::manifest::yaml::parse(&text).ok()?;
    let v = crate::manifest::yaml::Resolver::document(doc.docs.first()?).to_json();
    let name = t
        .context
        .clone()
        .or_else(|| v["context"].as_str().map(str::to_string))?;
    let endpoints: Vec<String> = v["contexts"][&name]["endpoints"]
        .as_array()?
        .iter()
        .filter_map(|e| e.as_str().map(str::to_string))
        .collect();
    Some((endpoints, format!("{} context {name}", path.display())))
}

/// The report as a person reads it.
pub fn render(r: &Report) -> String {
    let mut out = format!(
        "drgit doctor: {} ok, {} warning(s), {} failed\n",
        r.ok, r.warn, r.fail
    );
    let mut area = "";
    for k in &r.checks {
        if k.area != area {
            area = k.area;
            out.push_str(&format!("\n{area}\n"));
        }
        let tag = match k.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        out.push_str(&format!("  {tag}  {}: {}\n", k.name, k.detail));
        if let Some(fix) = &k.fix {
            out.push_str(&format!("        fix: {fix}\n"));
        }
    }
    out
}
