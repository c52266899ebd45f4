//! `drgit drill`: a backup is only as good as its last restore. Each drill
//! restores one backup somewhere harmless, checks the result, measures how
//! long it took, and removes what it made, also when it fails.
//!
//! * `pg --local`: `barman-cloud-restore` of the base backup the target
//!   needs into a throwaway data directory, PostgreSQL of the backup's
//!   major version started on a private socket with `restore_command`
//!   (`barman-cloud-wal-restore`) and the target written exactly as
//!   pg-recover writes it, promoted at the target; then the check queries.
//!   The S3 keys reach barman-cloud and PostgreSQL through the environment,
//!   never through a file.
//! * `etcd`: the snapshot downloaded and verified as etcd-recover does,
//!   restored with `etcdutl snapshot restore` (`etcdctl` where only that
//!   exists), a throwaway etcd started on loopback from it, the keys under
//!   `/registry/` counted by resource kind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Context, read_cluster_manifest};
use crate::backup::barman::Catalog;
use crate::config::{StoreUrl, parse_store_url};
use crate::error::Error;

/// What a drill found and how long it took.
#[derive(Debug, Clone, Serialize, Default)]
pub struct DrillReport {
    /// `pg`, `etcd` or `kanidm`.
    pub kind: String,
    /// `local` or `in-cluster`.
    pub mode: String,
    /// The base backup, snapshot or backup restored.
    pub backup: String,
    /// The target written (PostgreSQL's form), or none: the end of the WAL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The restored copy came up and answered (PostgreSQL: promoted at the target).
    pub reached: bool,
    pub bytes_restored: u64,
    /// Seconds to restore the base backup (or snapshot).
    pub restore_secs: f64,
    /// Seconds from start to promotion (WAL replay), or to etcd answering.
    pub replay_secs: f64,
    /// The whole drill: the measured time to recover.
    pub total_secs: f64,
    pub checks: Vec<CheckResult>,
    /// etcd: keys under /registry/ by resource kind.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub keys: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why the drill failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub query: String,
    pub ok: bool,
    pub result: String,
}

impl DrillReport {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.reached && self.checks.iter().all(|c| c.ok)
    }
}

#[derive(Debug, Clone, Default)]
pub struct PgArgs {
    pub target_time: Option<String>,
    pub timezone: Option<String>,
}

/// A drill refused before anything started.
fn refuse(reason: impl Into<String>) -> Error {
    Error::DrillRefused {
        reason: reason.into(),
    }
}

/// `program` when it is on PATH.
fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// `etcdctl version`'s `etcdctl version: 3.6.4` as (major, minor).
fn etcdctl_version(etcdctl: &Path) -> Option<(u32, u32)> {
    let out = Command::new(etcdctl)
        .arg("version")
        .env("ETCDCTL_API", "3")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix("etcdctl version: "))?
        .trim();
    let mut it = v.split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Runs a command as `[drill] run_as` when set (through `runuser`), else
/// as drgit's own user.
struct Runner {
    run_as: Option<String>,
    env: Vec<(String, String)>,
}

impl Runner {
    fn command(&self, program: &Path) -> Command {
        let mut c = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs to the end; its stderr's last lines on failure.
    fn run(&self, what: &str, program: &Path, args: &[&str]) -> Result<String, String> {
        let out = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(format!(
                "{what} failed ({}): {}",
                out.status,
                super::kanidm_recert::tail(&err, 6)
            ))
        }
    }
}

/// The user drgit runs as is root: PostgreSQL will not run so.
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A throwaway directory, removed when dropped (also after a failure).
fn scratch(ctx: &Context, kind: &str, run_as: Option<&str>) -> Result<tempfile::TempDir, Error> {
    let parent = ctx
        .config
        .drill
        .work_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix(&format!("drgit-drill-{kind}-"))
        .tempdir_in(&parent)
        .map_err(|source| Error::ReadFile {
            file: parent.display().to_string(),
            source,
        })?;
    if let Some(user) = run_as {
        // The user the tools run as owns the directory.
        let out = Command::new("chown")
            .arg(user)
            .arg(dir.path())
            .output()
            .map_err(|source| Error::ReadFile {
                file: dir.path().display().to_string(),
                source,
            })?;
        if !out.status.success() {
            return Err(refuse(format!(
                "cannot give {} to `{user}` ([drill] run_as): {}",
                dir.path().display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok(dir)
}

fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&p) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// PostgreSQL's bin directory and its major version.
fn postgres_bin(ctx: &Context, want_major: Option<u32>) -> Result<(PathBuf, u32), Error> {
    let candidates: Vec<PathBuf> = match &ctx.config.drill.postgres_bin {
        Some(dir) => vec![dir.clone()],
        None => {
            // A `postgres` on PATH is often a link into the real bin
            // directory, where pg_ctl and psql are.
            let mut v: Vec<PathBuf> = on_path("postgres")
                .map(|p| p.canonicalize().unwrap_or(p))
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .into_iter()
                .collect();
            if let Some(m) = want_major {
                v.push(PathBuf::from(format!("/usr/lib/postgresql/{m}/bin")));
            }
            v
        }
    };
    let mut seen = Vec::new();
    for dir in &candidates {
        if !["pg_ctl", "psql"].iter().all(|t| dir.join(t).is_file()) {
            seen.push(format!("{} has no pg_ctl and psql", dir.display()));
            continue;
        }
        let Ok(out) = Command::new(dir.join("postgres")).arg("--version").output() else {
            continue;
        };
        // `postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)`
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let major = text
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse::<u32>().ok());
        if let Some(major) = major {
            if want_major.is_none_or(|w| w == major) {
                return Ok((dir.clone(), major));
            }
            seen.push(format!("{} is PostgreSQL {major}", dir.display()));
        }
    }
    Err(refuse(match want_major {
        Some(m) => format!(
            "the backup is of PostgreSQL {m}; no PostgreSQL {m} found ({}). Install it, or point `[drill] postgres_bin` at its bin directory",
            if seen.is_empty() {
                "none on PATH".to_string()
            } else {
                seen.join(", ")
            }
        ),
        None => "no PostgreSQL found on PATH; set `[drill] postgres_bin`".into(),
    }))
}

/// What a PostgreSQL drill restores: the lineage a recovery would read,
/// its catalog, and the target and base backup, checked as pg-recover
/// checks them.
struct PgSource {
    manifest: super::Manifest,
    lineage: String,
    catalog: Catalog,
    target: Option<jiff::Timestamp>,
    backup_id: String,
}

fn pg_source(
    ctx: &Context,
    args: &PgArgs,
    credentials: Option<(String, String)>,
) -> Result<PgSource, Error> {
    let manifest = read_cluster_manifest(ctx)?;
    super::check_backup_location(ctx, &manifest)?;
    let store = ctx.open_store_with(credentials)?;
    let lineage = manifest.cluster.recovery_lineage().to_string();
    let catalog = Catalog::read(
        store.as_ref(),
        &format!("{}{lineage}/", ctx.config.postgres.catalog_prefix),
        &lineage,
    )?;
    let (target, backup_id) = super::pg_recover::choose_target(
        ctx,
        &catalog,
        args.target_time.as_deref(),
        args.timezone.as_deref(),
    )?;
    Ok(PgSource {
        manifest,
        lineage,
        catalog,
        target,
        backup_id,
    })
}

/// `drill pg --local`.
pub fn pg_local(ctx: &Context, args: &PgArgs) -> Result<DrillReport, Error> {
    let started = Instant::now();
    let pg = &ctx.config.postgres;
    let StoreUrl::S3 { bucket, prefix } = parse_store_url(&ctx.backup_url, &ctx.config_base)?
    else {
        return Err(refuse(format!(
            "barman-cloud reads S3 only: `{}` is a local directory; point `[backup] url` (or --backup-url) at the bucket",
            ctx.backup_url
        )));
    };
    // The keys read once: for the catalog here, and for barman-cloud.
    let credentials = ctx.s3_credentials();
    let PgSource {
        lineage,
        catalog,
        target,
        backup_id,
        ..
    } = pg_source(ctx, args, credentials.clone())?;
    let backup = catalog
        .backups
        .iter()
        .find(|b| b.id == backup_id)
        .ok_or_else(|| refuse(format!("base backup {backup_id} is not in the catalog")))?;
    let major = backup.pg_version.map(|v| v / 10000);

    // The tools, before anything starts.
    let restore = on_path("barman-cloud-restore").ok_or_else(|| {
        refuse("barman-cloud-restore is not on PATH: install barman-cli-cloud (the tool CNPG's restore uses)")
    })?;
    let wal_restore = on_path("barman-cloud-wal-restore").ok_or_else(|| {
        refuse("barman-cloud-wal-restore is not on PATH: install barman-cli-cloud")
    })?;
    let (bin, found) = postgres_bin(ctx, major)?;
    let run_as = ctx.config.drill.run_as.clone();
    if run_as.is_none() && is_root() {
        return Err(refuse(
            "PostgreSQL does not run as root: set `[drill] run_as` (e.g. \"postgres\") or run drgit as another user",
        ));
    }

    let mut env: Vec<(String, String)> = vec![(
        "AWS_DEFAULT_REGION".into(),
        ctx.config.backup.region.clone(),
    )];
    if let Some((id, secret)) = credentials {
        env.push(("AWS_ACCESS_KEY_ID".into(), id));
        env.push(("AWS_SECRET_ACCESS_KEY".into(), secret));
    }
    let runner = Runner {
        run_as: run_as.clone(),
        env,
    };
    let dir = scratch(ctx, "pg", run_as.as_deref())?;
    let data = dir.path().join("data");
    let dest = format!("s3://{bucket}/{prefix}{}", pg.catalog_prefix);
    let endpoint = &ctx.config.backup.endpoint;
    let mut report = DrillReport {
        kind: "pg".into(),
        mode: "local".into(),
        backup: backup_id.clone(),
        target: target.map(crate::timearg::postgres),
        version: Some(format!("PostgreSQL {found}")),
        ..Default::default()
    };
    crate::progress(&format!(
        "drill: restoring base backup {backup_id} of `{lineage}` into {}",
        data.display()
    ));

    // The base backup.
    let t0 = Instant::now();
    let mut restore_args: Vec<&str> = Vec::new();
    if !endpoint.is_empty() {
        restore_args.extend(["--endpoint-url", endpoint]);
    }
    let data_s = data.display().to_string();
    restore_args.extend([dest.as_str(), lineage.as_str(), backup_id.as_str(), &data_s]);
    if let Err(e) = runner.run("barman-cloud-restore", &restore, &restore_args) {
        report.error = Some(e);
        report.total_secs = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    report.restore_secs = t0.elapsed().as_secs_f64();
    report.bytes_restored = dir_size(&data);

    // Recovery settings, the target as pg-recover writes it.
    let socket = dir.path().display().to_string();
    let mut conf = format!(
        "\n# drgit drill\nport = 5432\nlisten_addresses = ''\nunix_socket_directories = '{socket}'\narchive_mode = off\nrestore_command = '{} {}{} {lineage} %f %p'\nrecovery_target_action = 'promote'\n",
        wal_restore.display(),
        if endpoint.is_empty() {
            String::new()
        } else {
            format!("--endpoint-url {endpoint} ")
        },
        dest,
    );
    if let Some(t) = &report.target {
        conf.push_str(&format!("recovery_target_time = '{t}'\n"));
    }
    let written = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.auto.conf"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))
        .and_then(|_| std::fs::write(data.join("recovery.signal"), b""));
    if let Err(e) = written {
        report.error = Some(format!("cannot write the recovery settings: {e}"));
        return Ok(report);
    }
    if let Some(user) = &run_as {
        let _ = Command::new("chown")
            .arg(user)
            .arg(data.join("recovery.signal"))
            .output();
    }

    // Start, wait for the promotion, run the checks, stop.
    let log = dir.path().join("postgres.log");
    let log_s = log.display().to_string();
    let t1 = Instant::now();
    if let Err(e) = runner.run(
        "pg_ctl start",
        &bin.join("pg_ctl"),
        &["-D", &data_s, "-l", &log_s, "-W", "start"],
    ) {
        report.error = Some(e);
        return Ok(report);
    }
    let stop = StopOnDrop {
        runner: &runner,
        pg_ctl: bin.join("pg_ctl"),
        data: data_s.clone(),
    };
    let psql = |q: &str| {
        runner.run(
            "psql",
            &bin.join("psql"),
            &[
                "-h", &socket, "-p", "5432", "-U", "postgres", "-qAt", "-c", q,
            ],
        )
    };
    let deadline = Duration::from_secs(ctx.config.drill.timeout_secs);
    loop {
        if let Some(fatal) = fatal_line(&log) {
            report.error = Some(format!("PostgreSQL stopped: {fatal}"));
            break;
        }
        let answer = psql("select pg_is_in_recovery()");
        if answer.as_ref().is_ok_and(|o| o.trim() == "f") {
            report.reached = true;
            report.replay_secs = t1.elapsed().as_secs_f64();
            break;
        }
        tracing::debug!(?answer, "not promoted yet");
        if t1.elapsed() > deadline {
            report.error = Some(format!(
                "not promoted within {}s (`[drill] timeout_secs`); the last look: {}",
                deadline.as_secs(),
                match answer {
                    Ok(o) => format!("pg_is_in_recovery() = {}", o.trim()),
                    Err(e) => e,
                }
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if report.reached {
        let mut queries = vec!["select count(*) from pg_class".to_string()];
        queries.extend(ctx.config.drill.pg_checks.iter().cloned());
        for q in queries {
            let (ok, result) = match psql(&q) {
                Ok(out) => (true, out.trim().to_string()),
                Err(e) => (false, e),
            };
            report.checks.push(CheckResult {
                query: q,
                ok,
                result,
            });
        }
    }
    drop(stop);
    drop(dir);
    report.total_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Stops the throwaway PostgreSQL, however the drill ends.
struct StopOnDrop<'a> {
    runner: &'a Runner,
    pg_ctl: PathBuf,
    data: String,
}

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.runner.run(
            "pg_ctl stop",
            &self.pg_ctl,
            &["-D", &self.data, "-m", "fast", "-w", "stop"],
        );
    }
}

/// The line that says why PostgreSQL stopped (recovery ended before the
/// target, a bad setting), not the refusals polling connections get.
fn fatal_line(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter(|l| l.contains("FATAL") || l.contains("PANIC"))
        .find(|l| {
            !l.contains("the database system is starting up")
                && !l.contains("the database system is not yet accepting connections")
        })
        .map(str::to_string)
}

#[derive(Debug, Clone, Default)]
pub struct EtcdArgs {
    /// `latest`, a snapshot's name in the store, or a local file.
    pub snapshot: String,
}

fn free_port() -> Result<u16, Error> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| Error::ReadFile {
            file: "a free loopback port".into(),
            source,
        })
}

/// Kills the throwaway etcd, however the drill ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `drill etcd`.
pub fn etcd(ctx: &Context, args: &EtcdArgs) -> Result<DrillReport, Error> {
    let started = Instant::now();
    let etcd_bin = on_path("etcd")
        .ok_or_else(|| refuse("etcd is not on PATH: install etcd (the server) to restore into"))?;
    let etcdctl = on_path("etcdctl")
        .ok_or_else(|| refuse("etcdctl is not on PATH: install etcd's client"))?;
    let dir = scratch(ctx, "etcd", None)?;
    let snapshot = super::etcd_recover::snapshot(
        ctx,
        &super::etcd_recover::Args {
            snapshot: args.snapshot.clone(),
            data_dir_copy: false,
            no_surviving_copy: false,
            dry_run: true,
            yes: false,
            show_plan: None,
        },
        dir.path(),
    )?;
    let mut report = DrillReport {
        kind: "etcd".into(),
        mode: "local".into(),
        backup: snapshot.source.clone(),
        ..Default::default()
    };
    let (peer, client) = (free_port()?, free_port()?);
    let peer_url = format!("http://127.0.0.1:{peer}");
    let client_url = format!("http://127.0.0.1:{client}");
    let data = dir.path().join("etcd");
    let data_s = data.display().to_string();
    let local = snapshot.local.display().to_string();
    let cluster = format!("drill={peer_url}");
    let restore_flags = [
        "--data-dir",
        &data_s,
        "--name",
        "drill",
        "--initial-cluster",
        &cluster,
        "--initial-advertise-peer-urls",
        &peer_url,
    ];
    // etcdutl since etcd 3.5; etcdctl's own restore before (deprecated in
    // 3.5, removed in 3.6: etcd CHANGELOG-3.6 "Removed etcdctl snapshot
    // restore"; v3.6.4 etcdctl/ctlv3/command/snapshot_command.go has only
    // `save`).
    let (tool, mut restore): (PathBuf, Vec<&str>) = match on_path("etcdutl") {
        Some(u) => (u, vec!["snapshot", "restore", &local]),
        None => {
            if let Some(v) = etcdctl_version(&etcdctl).filter(|v| *v >= (3, 6)) {
                return Err(refuse(format!(
                    "etcdutl is not on PATH, and etcdctl {}.{} has no `snapshot restore` (etcd 3.6 moved it to etcdutl): install etcdutl, which ships beside etcd and etcdctl in etcd's release archive",
                    v.0, v.1
                )));
            }
            (etcdctl.clone(), vec!["snapshot", "restore", &local])
        }
    };
    restore.extend(restore_flags);
    let t0 = Instant::now();
    let out = Command::new(&tool)
        .args(&restore)
        .env("ETCDCTL_API", "3")
        .output()
        .map_err(|source| Error::ReadFile {
            file: tool.display().to_string(),
            source,
        })?;
    if !out.status.success() {
        report.error = Some(format!(
            "{} snapshot restore failed: {}",
            tool.display(),
            super::kanidm_recert::tail(&String::from_utf8_lossy(&out.stderr), 6)
        ));
        report.total_secs = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    report.restore_secs = t0.elapsed().as_secs_f64();
    report.bytes_restored = dir_size(&data);

    let log =
        std::fs::File::create(dir.path().join("etcd.log")).map_err(|source| Error::ReadFile {
            file: dir.path().join("etcd.log").display().to_string(),
            source,
        })?;
    let t1 = Instant::now();
    let child = Command::new(&etcd_bin)
        .args([
            "--name",
            "drill",
            "--data-dir",
            &data_s,
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &cluster,
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|source| Error::ReadFile {
            file: etcd_bin.display().to_string(),
            source,
        })?;
    let etcd = KillOnDrop(child);
    let ctl = |a: &[&str]| {
        Command::new(&etcdctl)
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &client_url, "--command-timeout=5s"])
            .args(a)
            .output()
    };
    let deadline = Duration::from_secs(ctx.config.drill.timeout_secs);
    while !ctl(&["endpoint", "health"]).is_ok_and(|o| o.status.success()) {
        if t1.elapsed() > deadline {
            report.error = Some(format!(
                "etcd did not answer within {}s; its log: {}",
                deadline.as_secs(),
                super::kanidm_recert::tail(
                    &std::fs::read_to_string(dir.path().join("etcd.log")).unwrap_or_default(),
                    4
                )
            ));
            report.total_secs = started.elapsed().as_secs_f64();
            return Ok(report);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    report.replay_secs = t1.elapsed().as_secs_f64();
    report.reached = true;
    match ctl(&["get", "/registry/", "--prefix", "--keys-only"]) {
        Ok(o) if o.status.success() => {
            for key in String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| !l.is_empty())
            {
                // /registry/<kind>/… (apiserver's storage layout).
                let kind = key.split('/').nth(2).unwrap_or("?").to_string();
                *report.keys.entry(kind).or_default() += 1;
            }
            report.checks.push(CheckResult {
                query: "keys under /registry/".into(),
                ok: !report.keys.is_empty(),
                result: format!("{}", report.keys.values().sum::<u64>()),
            });
        }
        Ok(o) => report.checks.push(CheckResult {
            query: "keys under /registry/".into(),
            ok: false,
            result: String::from_utf8_lossy(&o.stderr).trim().to_string(),
        }),
        Err(e) => report.checks.push(CheckResult {
            query: "keys under /registry/".into(),
            ok: false,
            result: e.to_string(),
        }),
    }
    report.version = ctl(&["version"]).ok().and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .map(|l| l.trim().to_string())
    });
    drop(etcd);
    drop(dir);
    report.total_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The report as a person reads it.
pub fn render(reports: &[DrillReport]) -> String {
    let mut out = String::new();
    for r in reports {
        out.push_str(&format!(
            "drgit drill {} ({}): {}\n",
            r.kind,
            r.mode,
            if r.ok() {
                "restored and checked"
            } else {
                "FAILED"
            }
        ));
        out.push_str(&format!("  backup:        {}\n", r.backup));
        if let Some(t) = &r.target {
            out.push_str(&format!("  target:        {t}\n"));
        } else if r.kind == "pg" {
            out.push_str("  target:        the end of the archived WAL\n");
        }
        if let Some(v) = &r.version {
            out.push_str(&format!("  restored with: {v}\n"));
        }
        out.push_str(&format!(
            "  reached:       {}\n",
            if r.reached { "yes" } else { "no" }
        ));
        out.push_str(&format!(
            "  restored:      {} bytes in {:.2} s\n",
            r.bytes_restored, r.restore_secs
        ));
        let replay = if r.kind == "pg" {
            "WAL replay:"
        } else {
            "started in:"
        };
        out.push_str(&format!("  {replay:<14} {:.2} s\n", r.replay_secs));
        out.push_str(&format!("  total (RTO):   {:.2} s\n", r.total_secs));
        for c in &r.checks {
            out.push_str(&format!(
                "  check {}  {} → {}\n",
                if c.ok { "ok  " } else { "FAIL" },
                c.query,
                c.result
            ));
        }
        for (k, n) in &r.keys {
            out.push_str(&format!("  keys /registry/{k}/: {n}\n"));
        }
        if let Some(e) = &r.error {
            out.push_str(&format!("  error: {e}\n"));
        }
    }
    out
}

/// The journal's scenario name of an in-cluster drill (`drgit resume`
/// deletes what it made).
pub const SCENARIO: &str = "drill-pg-in-cluster";

/// What an interrupted in-cluster drill left: the throwaway Cluster.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct Throwaway {
    namespace: String,
    name: String,
    uid: Option<String>,
}

/// The throwaway Cluster: the manifest's spec with one instance, its
/// `backup` section and plugins removed (it must never archive into any
/// lineage), and `bootstrap.recovery` from the lineage through an
/// external cluster built from the manifest's own store.
fn throwaway_cluster(
    manifest: &super::Manifest,
    name: &str,
    namespace: &str,
    lineage: &str,
    backup_id: &str,
    target: Option<&str>,
) -> Result<serde_json::Value, Error> {
    use crate::manifest::cnpg::BackupKind;
    use crate::manifest::yaml;
    use serde_json::json;
    let doc = manifest
        .stream
        .docs
        .get(manifest.cluster.doc)
        .ok_or_else(|| {
            refuse(format!(
                "{}: the Cluster document is gone",
                manifest.display()
            ))
        })?;
    let mut spec = yaml::Resolver::document(doc).to_json()["spec"].take();
    let source = match &manifest.cluster.backup {
        BackupKind::InTree { .. } => {
            let mut store = spec["backup"]["barmanObjectStore"].take();
            store["serverName"] = json!(lineage);
            json!({"name": "drgit-drill-source", "barmanObjectStore": store})
        }
        BackupKind::Plugin { object_name, .. } => json!({
            "name": "drgit-drill-source",
            "plugin": {
                "name": crate::manifest::cnpg::BARMAN_PLUGIN,
                "parameters": {"barmanObjectName": object_name, "serverName": lineage}
            }
        }),
    };
    let Some(obj) = spec.as_object_mut() else {
        return Err(refuse(format!(
            "{}: the Cluster has no spec",
            manifest.display()
        )));
    };
    obj.remove("backup");
    obj.remove("plugins");
    // What one instance cannot have and what would clash with production
    // (cloudnative-pg v1.30.0 internal/webhook/v1/cluster_webhook.go):
    // "maxSyncReplicas must be lower than the number of instances", the
    // synchronous replicas of `postgresql.synchronous` likewise, replica
    // mode (its source is production's external cluster, dropped here),
    // and `managed.services` (additional services under names of their
    // own, which production's Cluster already holds).
    for key in ["minSyncReplicas", "maxSyncReplicas", "replica"] {
        obj.remove(key);
    }
    if let Some(pg) = obj.get_mut("postgresql").and_then(|v| v.as_object_mut()) {
        pg.remove("synchronous");
    }
    if let Some(managed) = obj.get_mut("managed").and_then(|v| v.as_object_mut()) {
        managed.remove("services");
    }
    obj.insert("instances".into(), json!(1));
    obj.insert("externalClusters".into(), json!([source]));
    let mut recovery = json!({"source": "drgit-drill-source"});
    let mut target_spec = json!({"backupID": backup_id});
    if let Some(t) = target {
        target_spec["targetTime"] = json!(t);
    }
    recovery["recoveryTarget"] = target_spec;
    obj.insert("bootstrap".into(), json!({"recovery": recovery}));
    Ok(json!({
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "drgit", "drgit.io/drill": "true"}
        },
        "spec": spec,
    }))
}

/// `drill pg --in-cluster`.
pub fn pg_in_cluster(ctx: &Context, args: &PgArgs) -> Result<DrillReport, Error> {
    let started = Instant::now();
    let pg = &ctx.config.postgres;
    let PgSource {
        manifest,
        lineage,
        target,
        backup_id,
        ..
    } = pg_source(ctx, args, ctx.s3_credentials())?;
    let written = target.map(crate::timearg::postgres);
    let name = format!(
        "{}-drill-{}",
        pg.cluster,
        crate::timearg::compact(ctx.now).to_lowercase()
    );
    let object = throwaway_cluster(
        &manifest,
        &name,
        &pg.namespace,
        &lineage,
        &backup_id,
        written.as_deref(),
    )?;
    let (kube, mut throwaway, mut journal) = start_throwaway(ctx, SCENARIO, &pg.namespace, &name)?;
    let mut report = DrillReport {
        kind: "pg".into(),
        mode: "in-cluster".into(),
        backup: backup_id.clone(),
        target: written.clone(),
        ..Default::default()
    };
    crate::progress(&format!(
        "drill: creating Cluster {}/{name} (no backup section: it archives nowhere), recovering `{lineage}` from base backup {backup_id}",
        pg.namespace
    ));
    let t0 = Instant::now();
    let outcome = (|| -> Result<(), Error> {
        let uid = kube.create_cnpg_cluster(&pg.namespace, &object)?;
        throwaway.uid = Some(uid);
        journal.data.params = serde_json::to_value(&throwaway).unwrap_or_default();
        journal.save()?;
        let state =
            super::pg_wait::watch_recovery_of(ctx, &kube, &name, None, crate::plan::stop_flag())?;
        report.reached = state.healthy();
        report.replay_secs = t0.elapsed().as_secs_f64();
        let primary = state
            .current_primary
            .clone()
            .unwrap_or_else(|| format!("{name}-1"));
        let mut queries = vec!["select count(*) from pg_class".to_string()];
        queries.extend(ctx.config.drill.pg_checks.iter().cloned());
        for q in queries {
            let out = kube.exec(
                &pg.namespace,
                &primary,
                Some("postgres"),
                &["psql", "-U", "postgres", "-AtX", "-c", &q],
            )?;
            report.checks.push(CheckResult {
                query: q,
                ok: out.success,
                result: if out.success {
                    out.stdout.trim().to_string()
                } else {
                    out.stderr.trim().to_string()
                },
            });
        }
        Ok(())
    })();
    // Deleted whatever happened: on success, on failure, on Ctrl-C.
    let deleted = delete_throwaway(&kube, &throwaway);
    finish(
        report,
        outcome,
        deleted,
        journal,
        &format!("the throwaway Cluster {}/{name}", pg.namespace),
        started,
    )
}

/// The Kubernetes client and the journal of an in-cluster drill, the
/// throwaway object recorded before it exists: a run killed at any point
/// leaves a journal `drgit resume` cleans up with.
fn start_throwaway(
    ctx: &Context,
    scenario: &str,
    namespace: &str,
    name: &str,
) -> Result<(crate::cluster::Kube, Throwaway, crate::plan::Journal), Error> {
    let kube =
        crate::cluster::Kube::connect(ctx.kubeconfig.as_deref(), ctx.kube_context.as_deref())?;
    let repo = crate::gitops::WorkRepo::open(&ctx.repo_dir)?;
    let throwaway = Throwaway {
        namespace: namespace.to_string(),
        name: name.to_string(),
        uid: None,
    };
    let journal = crate::plan::Journal::start(
        &repo.git_dir(),
        scenario,
        serde_json::to_value(&throwaway).unwrap_or_default(),
    )?;
    Ok((kube, throwaway, journal))
}

/// An in-cluster drill's end: its error, if any, in the report; the
/// journal closed once the throwaway object (`what`) is deleted, else
/// kept for `drgit resume`; an interruption cleaned up is reported as one.
fn finish(
    mut report: DrillReport,
    outcome: Result<(), Error>,
    deleted: Result<(), Error>,
    journal: crate::plan::Journal,
    what: &str,
    started: Instant,
) -> Result<DrillReport, Error> {
    let interrupted = match outcome {
        Err(e @ Error::Interrupted { .. }) => Some(e),
        Err(e) => {
            report.error = Some(e.to_string());
            None
        }
        Ok(()) => None,
    };
    match deleted {
        Ok(()) => journal.close(),
        Err(e) => {
            report.error = Some(format!(
                "{}; and {what} could not be deleted ({e}): `drgit resume` deletes it",
                report
                    .error
                    .clone()
                    .unwrap_or_else(|| "the drill ran".into()),
            ));
        }
    }
    report.total_secs = started.elapsed().as_secs_f64();
    match interrupted {
        // Ctrl-C: cleaned up; the exit says it was interrupted.
        Some(e) if report.error.is_none() => Err(e),
        _ => Ok(report),
    }
}

/// Deletes the throwaway Cluster (by uid when known) and waits until it is gone.
fn delete_throwaway(kube: &crate::cluster::Kube, t: &Throwaway) -> Result<(), Error> {
    let Some(state) = kube.cnpg_cluster(&t.namespace, &t.name)? else {
        return Ok(());
    };
    let uid = match (&t.uid, &state.uid) {
        (Some(mine), Some(live)) if mine != live => {
            // Another object took the name: not ours to delete.
            return Ok(());
        }
        (_, Some(live)) => live.clone(),
        _ => return Ok(()),
    };
    crate::progress(&format!(
        "drill: deleting Cluster {}/{}",
        t.namespace, t.name
    ));
    kube.delete_cnpg_cluster(&t.namespace, &t.name, &uid)?;
    for _ in 0..600 {
        if kube.cnpg_cluster(&t.namespace, &t.name)?.is_none() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(Error::NotDone {
        step: "drill cleanup".into(),
        detail: format!(
            "Cluster {}/{} still exists a minute after its deletion",
            t.namespace, t.name
        ),
    })
}

/// `drgit resume` after an interrupted in-cluster drill: deletes the
/// throwaway Cluster it created; the drill is not resumed.
pub fn resume(
    ctx: &Context,
    journal: crate::plan::Journal,
    _yes: bool,
) -> Result<serde_json::Value, Error> {
    clean_up_after(ctx, journal, "Cluster", delete_throwaway)
}

/// Deletes what an interrupted drill's journal names, then closes it.
fn clean_up_after(
    ctx: &Context,
    journal: crate::plan::Journal,
    kind: &str,
    delete: impl Fn(&crate::cluster::Kube, &Throwaway) -> Result<(), Error>,
) -> Result<serde_json::Value, Error> {
    let t: Throwaway = journal.params_as()?;
    let kube =
        crate::cluster::Kube::connect(ctx.kubeconfig.as_deref(), ctx.kube_context.as_deref())?;
    delete(&kube, &t)?;
    let summary = serde_json::json!({
        "scenario": journal.data.scenario,
        "cleaned_up": format!("{kind} {}/{}", t.namespace, t.name),
    });
    journal.close();
    Ok(summary)
}

/// The journal's scenario name of a Kanidm drill.
pub const KANIDM_SCENARIO: &str = "drill-kanidm";

#[derive(Debug, Clone, Default)]
pub struct KanidmArgs {
    /// The backup's file name, or `latest`.
    pub backup: String,
    /// The kanidmd image (default `[kanidm] image`); of the backup's series.
    pub image: Option<String>,
}

/// Entries in a kanidmd backup (`entries` of its JSON, gzip or not).
fn backup_entries(path: &Path, gzip: bool) -> Option<u64> {
    let file = std::fs::File::open(path).ok()?;
    let v: serde_json::Value = if gzip {
        serde_json::from_reader(flate2::read::GzDecoder::new(file)).ok()?
    } else {
        serde_json::from_reader(std::io::BufReader::new(file)).ok()?
    };
    v["entries"].as_array().map(|e| e.len() as u64)
}

/// The drill pod: the backup streamed into an emptyDir by a first init
/// container (the helper image's shell), restored by a second with
/// `kanidmd database restore`, then `kanidmd domain show` on the restored
/// database; nothing of it outlives the pod, and it serves nothing.
fn drill_pod(ctx: &Context, name: &str, image: &str, file: &str) -> serde_json::Value {
    let k = &ctx.config.kanidm;
    // The server's ConfigMap at /config, as the StatefulSet mounts it.
    let config = k.server_config_path.clone();
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": k.namespace,
            "labels": {"app.kubernetes.io/managed-by": "drgit", "drgit.io/drill": "true"}},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000},
            "initContainers": [
                {"name": "receive", "image": k.helper_image,
                 "command": ["sh", "-c", "while [ ! -f /data/.done ]; do sleep 0.2; done"],
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                {"name": "restore", "image": image,
                 "command": ["kanidmd", "database", "restore", "-c", config, format!("/data/{file}")],
                 "volumeMounts": [{"name": "data", "mountPath": "/data"},
                                  {"name": "config", "mountPath": "/config", "readOnly": true}]}
            ],
            "containers": [
                {"name": "check", "image": image,
                 "command": ["kanidmd", "domain", "show", "-c", config],
                 "volumeMounts": [{"name": "data", "mountPath": "/data"},
                                  {"name": "config", "mountPath": "/config", "readOnly": true}]}
            ],
            "volumes": [
                {"name": "data", "emptyDir": {}},
                {"name": "config", "configMap": {"name": k.server_configmap}}
            ]
        }
    })
}

/// `drill kanidm`.
pub fn kanidm(ctx: &Context, args: &KanidmArgs) -> Result<DrillReport, Error> {
    let started = Instant::now();
    let k = &ctx.config.kanidm;
    let dir = scratch(ctx, "kanidm", None)?;
    let backup = super::kanidm_restore::fetch_backup(ctx, &args.backup, dir.path())?;
    let image = args.image.clone().unwrap_or_else(|| k.image.clone());
    crate::backup::kinds::restore_image_matches(&backup.version, &image)
        .map_err(|why| refuse(format!("{}: {why}", backup.key)))?;
    let entries = backup_entries(&backup.local, backup.gzip);
    let name = format!(
        "drgit-kanidm-drill-{}",
        crate::timearg::compact(ctx.now).to_lowercase()
    );
    let pod: k8s_openapi::api::core::v1::Pod =
        serde_json::from_value(drill_pod(ctx, &name, &image, &backup.restore_name))
            .map_err(|e| refuse(format!("cannot build the drill pod: {e}")))?;
    let (kube, _, journal) = start_throwaway(ctx, KANIDM_SCENARIO, &k.namespace, &name)?;
    let mut report = DrillReport {
        kind: "kanidm".into(),
        mode: "in-cluster".into(),
        backup: backup.key.clone(),
        version: Some(format!("kanidmd {} ({image})", backup.version)),
        bytes_restored: backup.size,
        ..Default::default()
    };
    crate::progress(&format!(
        "drill: restoring {} into pod {}/{name} (an emptyDir; it serves nothing)",
        backup.key, k.namespace
    ));
    let stop = crate::plan::stop_flag();
    let deadline = Duration::from_secs(k.restore_timeout_secs + k.restore_run_timeout_secs);
    let t0 = Instant::now();
    let outcome = (|| -> Result<(), Error> {
        kube.create_pod(&k.namespace, &pod)?;
        // The backup into the receiving init container, checked by SHA-256.
        let dest = format!("/data/{}", backup.restore_name);
        let script = format!(
            "head -c {} > '{dest}.part' && mv '{dest}.part' '{dest}' && sha256sum '{dest}' && touch /data/.done",
            backup.size
        );
        let mut copied = None;
        while copied.is_none() {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(Error::Interrupted {
                    step: "copy".into(),
                });
            }
            let mut file =
                std::fs::File::open(&backup.local).map_err(|source| Error::ReadFile {
                    file: backup.local.display().to_string(),
                    source,
                })?;
            match kube.exec_with_input(
                &k.namespace,
                &name,
                Some("receive"),
                &["sh", "-c", &script],
                &mut file,
            ) {
                Ok(out) => copied = Some(out),
                // Not running yet (the image being pulled): again shortly.
                Err(e) if t0.elapsed() < deadline => {
                    tracing::debug!(%e, "the receiving container does not answer yet");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let stdout = copied.map(|o| o.stdout).unwrap_or_default();
        let written = stdout.split_whitespace().next().unwrap_or_default();
        if written != backup.sha256 {
            return Err(Error::NotDone {
                step: "copy".into(),
                detail: format!(
                    "the copy in the pod has SHA-256 {written}, not {} as downloaded",
                    backup.sha256
                ),
            });
        }
        report.restore_secs = t0.elapsed().as_secs_f64();
        // The restore and the check run; the pod ends.
        let t1 = Instant::now();
        let phase = loop {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(Error::Interrupted {
                    step: "restore".into(),
                });
            }
            let phase = kube.pod(&k.namespace, &name)?.map(|p| p.phase);
            match phase.as_deref() {
                Some("Succeeded") | Some("Failed") => break phase.unwrap_or_default(),
                _ if t0.elapsed() > deadline => {
                    return Err(Error::NotDone {
                        step: "restore".into(),
                        detail: format!(
                            "pod {name} still {} after {}s",
                            phase.unwrap_or_else(|| "missing".into()),
                            deadline.as_secs()
                        ),
                    });
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        report.replay_secs = t1.elapsed().as_secs_f64();
        let restore_log = kube.pod_log(&k.namespace, &name, Some("restore"), Some(50))?;
        let restored = super::kanidm_restore::judge_restore(&restore_log);
        report.checks.push(CheckResult {
            query: "kanidmd database restore".into(),
            ok: restored.is_ok(),
            result: match &restored {
                Ok(()) => "Restore Success".into(),
                Err(why) => format!("{why}: {}", super::kanidm_recert::tail(&restore_log, 5)),
            },
        });
        if restored.is_ok() {
            let shown = kube.pod_log(&k.namespace, &name, Some("check"), Some(50))?;
            let domain: Vec<&str> = shown
                .lines()
                .filter(|l| l.to_lowercase().contains("domain"))
                .collect();
            report.checks.push(CheckResult {
                query: "kanidmd domain show".into(),
                ok: phase == "Succeeded" && !domain.is_empty(),
                result: if domain.is_empty() {
                    super::kanidm_recert::tail(&shown, 5)
                } else {
                    domain.join(" | ")
                },
            });
        }
        report.reached = phase == "Succeeded" && restored.is_ok();
        if let Some(n) = entries {
            report.keys.insert("entries".into(), n);
        }
        Ok(())
    })();
    let deleted = kube.delete_pod(&k.namespace, &name).map_err(Error::from);
    drop(dir);
    finish(
        report,
        outcome,
        deleted,
        journal,
        &format!("the drill pod {}/{name}", k.namespace),
        started,
    )
}

/// `drgit resume` after an interrupted Kanidm drill: deletes its pod.
pub fn resume_kanidm(
    ctx: &Context,
    journal: crate::plan::Journal,
    _yes: bool,
) -> Result<serde_json::Value, Error> {
    clean_up_after(ctx, journal, "pod", |kube, t| {
        Ok(kube.delete_pod(&t.namespace, &t.name)?)
    })
}
