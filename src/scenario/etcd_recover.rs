//! `drgit etcd-recover`: the runbook's etcd procedure on Talos, guarded.
//! It wipes every control-plane node, so it runs only when the cluster
//! really is lost, from a snapshot known to be good, in the right order.
//!
//! 1. The snapshot: from the store (verified download; `latest` skips a
//!    newest copy that fails verification) or a local file (verified the
//!    same way); its age and newest revision go in the plan.
//! 2. Really lost? No control plane is of machine type `init` (after a
//!    wipe it would start a new, empty etcd by itself); every control
//!    plane's Talos API answers, no etcd member runs healthy, and `etcd
//!    members` fails (or hangs, killed after its timeout) on each (no
//!    quorum). Else refuse: member replacement is the way, not a reset.
//! 3. Save what survives: each control plane's `member/snap/db` is copied
//!    into the run's directory and its newest revision shown beside the
//!    snapshot's; a newer copy is said so, with the command that restores
//!    from it instead.
//! 4. The plan: every talosctl command, in order. The reset is confirmed.
//! 5. Reset every control plane; wait until each answers with etcd
//!    `Preparing`; bootstrap the first from the snapshot and wait until its
//!    etcd runs (the restore happens after talosctl returned); wait until
//!    every control plane is a member; `talosctl health`. Journaled: an
//!    interrupted run never resets twice nor bootstraps twice.
//!
//! Git changes nothing here: Argo CD re-syncs from Git once the API
//! server is back.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::delivery::{MAX_POLL, ms, value};
use super::{Context, Detail, Outcome, sha256_file};
use crate::backup::bbolt::{self, Stats};
use crate::backup::download::{self, DownloadError, Kind};
use crate::backup::{kinds, verify};
use crate::cluster::talos::{self, Talosctl};
use crate::error::Error;
use crate::gitops::WorkRepo;
use crate::plan::{self, Journal, Poll, Step};

#[derive(Debug, Clone)]
pub struct Args {
    /// `latest`, a snapshot's name in the store, or a local file.
    pub snapshot: String,
    /// The file is a copy of etcd's data dir (no hash trailer): bootstrap
    /// with `--recover-skip-hash-check`. Never for a snapshot.
    pub data_dir_copy: bool,
    /// Go on though no control plane's data could be saved.
    pub no_surviving_copy: bool,
    pub dry_run: bool,
    pub yes: bool,
    /// Shows the plan before anything happens (the CLI prints it).
    pub show_plan: Option<fn(&Outcome)>,
}

/// The snapshot the recovery starts from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// Its key in the store, or the local file given.
    pub source: String,
    /// The verified local file talosctl uploads.
    pub local: PathBuf,
    pub size: u64,
    /// SHA-256 of the local file, checked again right before the bootstrap.
    pub sha256: String,
    /// When it was taken (from its name, else the store's LastModified; a
    /// local file's modification time), with its age.
    pub taken: Option<String>,
    pub stats: Option<Stats>,
    pub data_dir_copy: bool,
    /// Newer copies that failed verification and were skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

/// One control plane's etcd data, saved before the reset.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SurvivingCopy {
    pub node: String,
    /// The copy, kept in the run's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Why there is no usable copy of this node's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EtcdRecoverDetail {
    pub snapshot: Snapshot,
    pub control_plane: Vec<String>,
    pub workers: Vec<String>,
    /// What each control plane's etcd showed when checked.
    pub checked: Vec<String>,
    /// Each control plane's data, saved before anything is wiped.
    pub surviving: Vec<SurvivingCopy>,
    /// What was saved, and whether it is newer than the snapshot, as said.
    pub saved: Vec<String>,
}

/// What the plan needs; kept in the journal for `drgit resume`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Params {
    pub snapshot: Snapshot,
    pub control_plane: Vec<String>,
    pub workers: Vec<String>,
    #[serde(default)]
    pub surviving: Vec<SurvivingCopy>,
}

pub fn talosctl(ctx: &Context) -> Talosctl {
    let t = &ctx.config.talos;
    Talosctl {
        bin: t.talosctl.clone(),
        talosconfig: t.talosconfig.clone(),
        context: t.context.clone(),
        endpoints: t.endpoints.clone(),
        timeout: Duration::from_secs(t.call_timeout_secs),
    }
}

/// Verifies a local file as a snapshot (or, said so, a data dir copy).
fn verify_local(path: &Path, data_dir_copy: bool) -> Result<(), verify::Corrupt> {
    if data_dir_copy {
        verify::etcd_db_file(path)?;
        // A copy of a live data dir may be inconsistent; talosctl's
        // bootstrap would refuse it (etcdutl `Status` runs bbolt's check).
        bbolt::check(path)
            .map(|_| ())
            .map_err(verify::Corrupt::EtcdPages)
    } else {
        verify::etcd_snapshot(path)
    }
}

/// Step 1: the snapshot, verified.
pub fn snapshot(ctx: &Context, args: &Args, dir: &Path) -> Result<Snapshot, Error> {
    let local = Path::new(&args.snapshot);
    if local.is_file() {
        verify_local(local, args.data_dir_copy).map_err(|source| Error::Snapshot {
            file: args.snapshot.clone(),
            hint: if args.data_dir_copy {
                "it is not a bbolt database as etcd keeps in its data dir"
            } else {
                "pick another snapshot (one from `talosctl etcd snapshot` ends with its SHA-256; only a copy of the data dir has none, and only for one say so with --recover-skip-hash-check)"
            },
            source,
        })?;
        let meta = std::fs::metadata(local).map_err(|source| Error::ReadFile {
            file: args.snapshot.clone(),
            source,
        })?;
        let taken = meta
            .modified()
            .ok()
            .and_then(|m| jiff::Timestamp::try_from(m).ok())
            .map(|t| describe_time(ctx, t));
        // A copy of its own: the file given may move or change while the
        // nodes reboot, and a resume may run from another directory.
        crate::private::create_dir_all(dir).map_err(|source| Error::ReadFile {
            file: dir.display().to_string(),
            source,
        })?;
        let copy = dir.join(local.file_name().unwrap_or_default());
        crate::private::copy(local, &copy).map_err(|source| Error::ReadFile {
            file: copy.display().to_string(),
            source,
        })?;
        verify_local(&copy, args.data_dir_copy).map_err(|source| Error::Snapshot {
            file: copy.display().to_string(),
            hint: "the copy differs from the file given: copy it again",
            source,
        })?;
        return Ok(Snapshot {
            source: args.snapshot.clone(),
            sha256: sha256_file(&copy)?,
            stats: bbolt::stats(&copy).ok(),
            local: copy,
            size: meta.len(),
            taken,
            data_dir_copy: args.data_dir_copy,
            skipped: Vec::new(),
        });
    }
    if args.data_dir_copy {
        return Err(Error::NotDone {
            step: "snapshot".into(),
            detail: format!(
                "--recover-skip-hash-check is for a copy of etcd's data dir given as a local file; `{}` is not a file here, and snapshots in the store carry their hash",
                args.snapshot
            ),
        });
    }
    let prefix = &ctx.config.talos.etcd_prefix;
    let store = ctx.open_store()?;
    let candidates = if args.snapshot == "latest" {
        let mut all = kinds::etcd_snapshots(store.as_ref(), prefix)?;
        all.reverse();
        all
    } else {
        vec![kinds::find(
            store.as_ref(),
            Kind::Etcd,
            prefix,
            &args.snapshot,
        )?]
    };
    crate::private::create_dir_all(dir).map_err(|source| Error::ReadFile {
        file: dir.display().to_string(),
        source,
    })?;
    let mut skipped = Vec::new();
    for item in candidates {
        let name = item
            .key
            .rsplit('/')
            .next()
            .unwrap_or("snapshot.db")
            .to_string();
        let dest = dir.join(&name);
        match download::download_item(
            store.as_ref(),
            &item,
            &dest,
            Kind::Etcd,
            &download::Options::default(),
        ) {
            Ok(done) => {
                return Ok(Snapshot {
                    source: item.key.clone(),
                    stats: bbolt::stats(&dest).ok(),
                    sha256: sha256_file(&dest)?,
                    local: dest,
                    size: done.size,
                    taken: Some(describe_time(ctx, item.time)),
                    data_dir_copy: false,
                    skipped,
                });
            }
            Err(e @ DownloadError::Corrupt { .. }) if args.snapshot == "latest" => {
                tracing::warn!(%e, "skipping a snapshot that fails verification");
                skipped.push(e.to_string());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::NotDone {
        step: "snapshot".into(),
        detail: format!(
            "no etcd snapshot under `{prefix}` in {} passes verification{}",
            store.describe(),
            if skipped.is_empty() {
                String::new()
            } else {
                format!(": {}", skipped.join("; "))
            }
        ),
    })
}

fn describe_time(ctx: &Context, t: jiff::Timestamp) -> String {
    format!(
        "{} ({} ago)",
        crate::timearg::Second(t),
        crate::health::human_age(ctx.now.duration_since(t))
    )
}

/// Step 2, twice `[talos] settle_secs` apart: a control plane that is only
/// restarting (after a power cut every etcd waits a while) must not be
/// taken for a lost one.
fn really_lost(ctx: &Context, talos: &Talosctl, cps: &[String]) -> Result<Vec<String>, Error> {
    let first = lost_once(talos, cps)?;
    let settle = ctx.config.talos.settle_secs;
    if settle == 0 {
        return Ok(first);
    }
    tracing::info!(settle, "looking at etcd again before deciding it is lost");
    std::thread::sleep(Duration::from_secs(settle));
    lost_once(talos, cps)
}

/// Whether talosctl's failure says etcd has no quorum (or does not run),
/// as opposed to any other failure.
fn no_quorum(stderr: &str) -> bool {
    [
        "code = Unavailable",
        "no leader",
        "code = DeadlineExceeded",
        "context deadline exceeded",
        "connection refused",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}

/// One look: refuses unless etcd is lost on every control plane, each of
/// which answers. Returns what each showed.
fn lost_once(talos: &Talosctl, cps: &[String]) -> Result<Vec<String>, Error> {
    let out = talos.run(cps, &["service", "etcd"])?;
    let down = talos::unreachable(&out.stderr);
    if !down.is_empty() {
        return Err(Error::RefuseReset {
            reason: format!(
                "the Talos API of {} does not answer, so it cannot be reset (and its etcd may still run); bring it up or remove it from `[talos] control_plane`. talosctl said: {}",
                down.join(", "),
                out.tail(3)
            ),
        });
    }
    let states = talos::parse_service(&out.stdout);
    if let Some(missing) = cps.iter().find(|n| !states.iter().any(|s| &s.node == *n)) {
        return Err(Error::RefuseReset {
            reason: format!(
                "`talosctl service etcd` showed nothing for {missing}: {}",
                out.tail(3)
            ),
        });
    }
    if let Some(h) = states.iter().find(|s| s.healthy()) {
        return Err(Error::RefuseReset {
            reason: format!(
                "etcd on {} is Running with HEALTH OK: the cluster is not lost. Replace broken members with `talosctl etcd remove-member` / `talosctl reset` of that node alone instead",
                h.node
            ),
        });
    }
    // One call per node, side by side: each may hang until its timeout.
    let answers: Vec<Result<talos::TalosOutput, talos::TalosError>> = std::thread::scope(|sc| {
        let calls: Vec<_> = cps
            .iter()
            .map(|node| {
                sc.spawn(move || talos.run(std::slice::from_ref(node), &["etcd", "members"]))
            })
            .collect();
        calls
            .into_iter()
            .map(|c| {
                c.join().unwrap_or_else(|_| {
                    Err(talos::TalosError::Spawn {
                        bin: talos.bin.clone(),
                        source: std::io::Error::other("the call's thread panicked"),
                    })
                })
            })
            .collect()
    });
    for (node, m) in cps.iter().zip(answers) {
        let m = m?;
        // The call waits for a local etcd that does not listen: killed
        // after its timeout, it says no quorum there, where etcd does not
        // run. Where it runs, silence says nothing: refuse.
        if m.timed_out {
            let state = states.iter().find(|s| &s.node == node);
            if state.is_some_and(|s| s.state == "Running") {
                return Err(Error::RefuseReset {
                    reason: format!(
                        "`talosctl -n {node} etcd members` did not answer within {}s while etcd runs there: whether it still has quorum cannot be told. Look at `talosctl -n {node} logs etcd`",
                        talos.timeout.as_secs()
                    ),
                });
            }
            continue;
        }
        if !m.success && !no_quorum(&m.stderr) {
            return Err(Error::RefuseReset {
                reason: format!(
                    "`talosctl -n {node} etcd members` failed in a way that does not say etcd has no quorum: {}",
                    m.tail(3)
                ),
            });
        }
        if m.success {
            return Err(Error::RefuseReset {
                reason: format!(
                    "`talosctl -n {node} etcd members` answers: etcd still has quorum ({} member(s)). Use `talosctl etcd` member replacement instead",
                    talos::member_hosts(&m.stdout).len()
                ),
            });
        }
    }
    Ok(states
        .iter()
        .map(|s| {
            format!(
                "{}: etcd {} (health {}){}",
                s.node,
                s.state,
                s.health,
                s.events
                    .first()
                    .map(|e| format!(", last event {e}"))
                    .unwrap_or_default()
            )
        })
        .collect())
}

/// No control plane may be of machine type `init`: after the wipe it
/// starts a new, empty etcd by itself and never restores the snapshot
/// (talos v1.11 internal/app/machined/pkg/runtime/v1alpha1/
/// v1alpha1_sequencer_tasks.go: `TypeInit` runs etcd with `Bootstrap:
/// true`; services/etcd.go `argsForInit` never calls
/// `recoverFromSnapshot`; website/content/v1.11/advanced/
/// disaster-recovery.md: init nodes "are incompatible with etcd recovery").
fn check_machine_types(talos: &Talosctl, cps: &[String]) -> Result<(), Error> {
    let out = talos.run(cps, &["get", "machinetype"])?;
    let types = talos::machine_types(&out.stdout);
    for node in cps {
        match types
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, t)| t.as_str())
        {
            Some("controlplane") => {}
            Some("init") => {
                return Err(Error::RefuseReset {
                    reason: format!(
                        "{node} is of machine type `init`: after the wipe it would start a new, empty etcd by itself instead of waiting for the bootstrap from the snapshot. Make it a control plane first: `talosctl -n {node} edit mc --mode=staged` (machine.type: controlplane), then `talosctl -n {node} reboot`"
                    ),
                });
            }
            Some(other) => {
                return Err(Error::RefuseReset {
                    reason: format!(
                        "{node} is of machine type `{other}`, not a control plane: remove it from `[talos] control_plane`"
                    ),
                });
            }
            None => {
                return Err(Error::RefuseReset {
                    reason: format!(
                        "`talosctl -n {node} get machinetype` showed no machine type, so whether it is `init` cannot be told: {}",
                        out.tail(3)
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Where etcd keeps its database on a Talos node.
const MEMBER_DB: &str = "/var/lib/etcd/member/snap/db";

/// Copies each control plane's `member/snap/db` into `dir/<node>/db`
/// (`talosctl cp` extracts into a directory, one node at a time,
/// cmd/talosctl/cmd/talos/copy.go), as the disaster-recovery page says to
/// "even if the etcd cluster is unhealthy". Each copy is checked as a
/// bbolt database (one valid meta page is enough: a copy of a live file
/// may tear the other) and its newest revision read.
fn save_surviving(
    talos: &Talosctl,
    cps: &[String],
    dir: &Path,
    upload: Duration,
) -> Vec<SurvivingCopy> {
    cps.iter()
        .map(|node| {
            let into = dir.join(node.replace(':', "_"));
            let mut copy = SurvivingCopy {
                node: node.clone(),
                file: None,
                sha256: None,
                revision: None,
                error: None,
            };
            let file = into.join("db");
            let into_s = into.display().to_string();
            if let Err(e) = crate::private::create_dir_all(&into) {
                copy.error = Some(format!("cannot create {into_s}: {e}"));
                return copy;
            }
            // The file is gzipped and streamed: as long as an upload.
            let out = talos.run_for(
                std::slice::from_ref(node),
                &["cp", MEMBER_DB, &into_s],
                upload,
            );
            let read = match out {
                Err(e) => Err(e.to_string()),
                Ok(o) if !o.success => Err(o.tail(2)),
                Ok(_) => verify::etcd_db_file(&file)
                    .map_err(|c| format!("the copy is not a usable etcd database: {c}"))
                    .and_then(|()| {
                        bbolt::check(&file).map_err(|c| {
                            format!(
                                "the copy is not consistent (etcd may have written during it): {c}"
                            )
                        })
                    })
                    .and_then(|st| {
                        sha256_file(&file)
                            .map(|h| (st, h))
                            .map_err(|e| e.to_string())
                    }),
            };
            // etcd's data holds every Kubernetes Secret: the copy is for
            // this user alone (0600, as talosctl extracts it, etcd's own
            // mode, in a directory drgit made 0700 first).
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
            }
            match read {
                Ok((st, sha)) => {
                    copy.revision = Some(st.revision);
                    copy.sha256 = Some(sha);
                    copy.file = Some(file);
                }
                Err(why) => copy.error = Some(why),
            }
            copy
        })
        .collect()
}

/// The plan's lines on what was saved, and which data is newest.
fn surviving_lines(ctx: &Context, p: &Params) -> Vec<String> {
    let snap_rev = p.snapshot.stats.map(|s| s.revision);
    let mut lines = Vec::new();
    if p.surviving.is_empty() {
        let t = talosctl(ctx);
        lines.push(format!(
            "nothing yet: once talosctl answers, each control plane's etcd data is copied before anything is wiped (`{}`, per node) and its revision shown beside the snapshot's",
            t.command_line(
                std::slice::from_ref(&p.control_plane[0]),
                &["cp", MEMBER_DB, ".git/drgit/etcd-recover/surviving-<time>/<node>"]
            )
        ));
    }
    for c in &p.surviving {
        lines.push(match (&c.file, c.revision) {
            (Some(f), Some(r)) => format!(
                "{}: etcd data saved, revision {r}, in {} (SHA-256 {})",
                c.node,
                f.display(),
                c.sha256.as_deref().unwrap_or("?")
            ),
            _ => format!(
                "{}: etcd data NOT saved ({})",
                c.node,
                c.error.as_deref().unwrap_or("unknown")
            ),
        });
    }
    let newest = p
        .surviving
        .iter()
        .filter(|c| c.file.is_some())
        .max_by_key(|c| c.revision.unwrap_or(0));
    if let (Some(c), Some(snap)) = (newest, snap_rev)
        && c.revision.unwrap_or(0) > snap
    {
        let t = talosctl(ctx);
        lines.push(format!(
            "NEWER THAN THE SNAPSHOT: {}'s data has revision {}, the snapshot {snap}; to restore from it instead: `drgit etcd-recover --snapshot {} --recover-skip-hash-check` (the bootstrap would be `{}`)",
            c.node,
            c.revision.unwrap_or(0),
            c.file.as_ref().map(|f| f.display().to_string()).unwrap_or_default(),
            t.command_line(
                std::slice::from_ref(&p.control_plane[0]),
                &["bootstrap", "--recover-from=<that file>", "--recover-skip-hash-check"]
            )
        ));
    }
    lines
}

/// The commands and waits, in order (the plan and the steps' texts).
fn describe(step: &str, ctx: &Context, p: &Params) -> String {
    let t = talosctl(ctx);
    let first = std::slice::from_ref(&p.control_plane[0]);
    let recover = format!("--recover-from={}", p.snapshot.local.display());
    match step {
        "boot-ids" => format!(
            "Note each control plane's boot id (`{}`, per node), to tell a node that rebooted from one that did not",
            t.command_line(first, &["read", "/proc/sys/kernel/random/boot_id"])
        ),
        "reset" => format!(
            "Wipe etcd on every control plane and reboot (confirmed: type {}): `{}`",
            ctx.config
                .talos
                .cluster_name
                .as_deref()
                .map_or("`reset`".to_string(), |n| format!(
                    "the cluster's name `{n}`"
                )),
            t.command_line(&p.control_plane, &RESET_ARGS)
        ),
        "rebooted" => format!(
            "Wait until {} answer again with a new boot id and `service etcd` shows `Preparing` (waiting for the bootstrap)",
            p.control_plane.join(", ")
        ),
        "bootstrap" => {
            let mut args = vec!["bootstrap", recover.as_str()];
            if p.snapshot.data_dir_copy {
                args.push("--recover-skip-hash-check");
            }
            format!(
                "Start etcd on {} from {}: `{}`, then wait until its etcd runs with health OK (the restore runs after talosctl returns, and may fail)",
                first[0],
                p.snapshot.source,
                t.command_line(first, &args)
            )
        }
        "joined" => format!(
            "Wait until `{}` lists every control plane ({})",
            t.command_line(first, &["etcd", "members"]),
            p.control_plane.join(", ")
        ),
        "health" => format!(
            "Check the cluster: `{}`",
            t.command_line(
                first,
                &health_args(ctx, p)
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
            )
        ),
        other => other.to_string(),
    }
}

fn health_args(ctx: &Context, p: &Params) -> Vec<String> {
    vec![
        "health".into(),
        "--control-plane-nodes".into(),
        p.control_plane.join(","),
        "--worker-nodes".into(),
        p.workers.join(","),
        format!("--wait-timeout={}s", ctx.config.talos.join_timeout_secs),
    ]
}

/// The reset of a control plane for the recovery (Talos v1.11
/// disaster-recovery.md): EPHEMERAL, etcd's data, wiped.
/// `--wait=false`: talosctl would otherwise track the reset until the node
/// is back (cmd/talosctl/cmd/talos/track.go: `--wait` defaults to true,
/// `--timeout` 30m); the rebooted step watches for that instead.
const RESET_ARGS: [&str; 5] = [
    "reset",
    "--graceful=false",
    "--reboot",
    "--system-labels-to-wipe=EPHEMERAL",
    "--wait=false",
];

const STEPS: &[&str] = &[
    "boot-ids",
    "reset",
    "rebooted",
    "bootstrap",
    "joined",
    "health",
];

pub fn run(ctx: &Context, args: &Args) -> Result<Outcome, Error> {
    let t = &ctx.config.talos;
    if t.control_plane.is_empty() {
        return Err(Error::NotDone {
            step: "etcd-recover".into(),
            detail: "`[talos] control_plane` lists no node".into(),
        });
    }
    let repo = if args.dry_run {
        None
    } else {
        let repo = WorkRepo::open(&ctx.repo_dir)?;
        plan::Journal::refuse_if_running(&repo.git_dir())?;
        Some(repo)
    };
    // Step 1: the snapshot, before anything touches a node.
    let (dir, _scratch) = super::work_dir(repo.as_ref(), "etcd-recover")?;
    let mut snapshot = snapshot(ctx, args, &dir)?;
    if repo.is_none() && snapshot.local.starts_with(&dir) {
        // Where a real run keeps it (the dry run's copy is temporary).
        snapshot.local = PathBuf::from(".git/drgit/etcd-recover")
            .join(snapshot.local.file_name().unwrap_or_default());
    }
    let mut params = Params {
        snapshot,
        control_plane: t.control_plane.clone(),
        workers: t.workers.clone(),
        surviving: Vec::new(),
    };
    // Step 2: read-only; in a dry run without talosctl, said so.
    let talos = talosctl(ctx);
    let checked = match really_lost(ctx, &talos, &params.control_plane)
        .and_then(|lines| check_machine_types(&talos, &params.control_plane).map(|()| lines))
    {
        Ok(lines) => lines,
        Err(Error::Talos(e)) if args.dry_run => vec![format!("not checked: {e}")],
        Err(e) => return Err(e),
    };
    // Step 3: what survives, saved (kept) before anything is wiped.
    if !checked.iter().any(|c| c.starts_with("not checked")) {
        let stamp = crate::timearg::compact(ctx.now).to_lowercase();
        params.surviving = save_surviving(
            &talos,
            &params.control_plane,
            &dir.join(format!("surviving-{stamp}")),
            Duration::from_secs(t.upload_timeout_secs),
        );
        if !params.surviving.iter().any(|c| c.file.is_some())
            && !args.no_surviving_copy
            && !args.dry_run
        {
            return Err(Error::RefuseReset {
                reason: format!(
                    "no control plane's etcd data could be saved before the reset ({}). Copy one by hand (`talosctl -n NODE cp {MEMBER_DB} DIR`), or pass --no-surviving-copy to go on without",
                    params
                        .surviving
                        .iter()
                        .map(|c| format!("{}: {}", c.node, c.error.as_deref().unwrap_or("?")))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            });
        }
    }
    let mut plan_lines: Vec<String> = STEPS.iter().map(|s| describe(s, ctx, &params)).collect();
    plan_lines.push(
        "Then Argo CD re-syncs every Application from Git as the API server comes back (pods restart); check that the Applications report Synced and Healthy, and that workloads with local state (CNPG, Kanidm) are Ready".into(),
    );
    let mut outcome = Outcome {
        scenario: "etcd-recover",
        manifest: params.snapshot.source.clone(),
        dry_run: args.dry_run,
        changes: Vec::new(),
        diff: String::new(),
        plan: plan_lines,
        branch: None,
        commit: None,
        published: None,
        wait: None,
        detail: Detail::EtcdRecover(EtcdRecoverDetail {
            snapshot: params.snapshot.clone(),
            control_plane: params.control_plane.clone(),
            workers: params.workers.clone(),
            checked,
            surviving: params.surviving.clone(),
            saved: surviving_lines(ctx, &params),
        }),
    };
    let Some(repo) = repo else {
        return Ok(outcome);
    };
    if let Some(show) = args.show_plan {
        show(&outcome);
    }
    let journal = Journal::start(&repo.git_dir(), SCENARIO, value(&params))?;
    outcome.wait = Some(drive(ctx, journal, args.yes)?);
    Ok(outcome)
}

struct Env<'a> {
    ctx: &'a Context,
    talos: Talosctl,
    params: Params,
}

/// A node's boot id; None when it does not answer.
fn boot_id(talos: &Talosctl, node: &str) -> Result<Option<String>, Error> {
    let out = talos.run(
        &[node.to_string()],
        &["read", "/proc/sys/kernel/random/boot_id"],
    )?;
    Ok(out
        .success
        .then(|| out.stdout.trim().to_string())
        .filter(|b| !b.is_empty()))
}

impl Env<'_> {
    /// The control planes not reset yet: answering with the boot id noted
    /// before the reset.
    fn not_reset(&self, j: &Journal) -> Result<Vec<String>, Error> {
        let noted: std::collections::BTreeMap<String, String> = j.output_as("boot-ids")?;
        let mut out = Vec::new();
        for node in &self.params.control_plane {
            let now = boot_id(&self.talos, node)?;
            if now.is_some() && now.as_ref() == noted.get(node) {
                out.push(node.clone());
            }
        }
        Ok(out)
    }

    fn first(&self) -> &[String] {
        std::slice::from_ref(&self.params.control_plane[0])
    }

    /// `service etcd` on one node; None when it does not answer.
    fn etcd_state(&self, node: &str) -> Result<Option<talos::ServiceState>, Error> {
        let out = self.talos.run(&[node.to_string()], &["service", "etcd"])?;
        Ok(talos::parse_service(&out.stdout)
            .into_iter()
            .find(|s| s.node == node))
    }

    /// Stops on an etcd state that no wait mends: a restore that failed,
    /// or a node that gave up waiting for the bootstrap.
    fn refuse_state(&self, s: &talos::ServiceState) -> Result<(), Error> {
        let node = std::slice::from_ref(&s.node);
        if let Some(event) = s.restore_failed()
            && event.contains("error verifying snapshot")
        {
            // Refused before anything was written: the data dir is empty,
            // and Talos takes another bootstrap (etcdutl writes the db
            // only in the restore itself).
            return Err(Error::NotDone {
                step: "bootstrap".into(),
                detail: format!(
                    "etcd on {} refused the snapshot before restoring it: {event}. Nothing was written, so Talos takes another bootstrap: check the snapshot, then `drgit resume` sends it again",
                    s.node
                ),
            });
        }
        if let Some(event) = s.restore_failed() {
            return Err(Error::NotDone {
                step: "bootstrap".into(),
                detail: format!(
                    "etcd on {} failed to restore the snapshot: {event}. Its data dir now holds the failed restore, so Talos refuses another bootstrap. Wipe that node alone: `{}`; once it waits in Preparing again, `drgit resume` bootstraps it again",
                    s.node,
                    self.talos.command_line(node, &RESET_ARGS)
                ),
            });
        }
        if s.join_timed_out() {
            return Err(Error::NotDone {
                step: "bootstrap".into(),
                detail: format!(
                    "{} waited for the bootstrap longer than Talos allows (30 minutes, constants.EtcdJoinTimeout) and its etcd failed: reboot it (`{}`), then `drgit resume`, which waits for it again",
                    s.node,
                    self.talos.command_line(node, &["reboot"])
                ),
            });
        }
        Ok(())
    }

    /// Waits until etcd on `node` runs with health OK after a bootstrap;
    /// a Failed service stops it with its events.
    fn watch_restore(&self, node: &str, stop: &AtomicBool) -> Result<(), Error> {
        self.wait_for(
            "bootstrap",
            self.ctx.config.talos.restore_timeout_secs,
            stop,
            || match self.etcd_state(node)? {
                Some(s) if s.healthy() => Ok(Poll::Ready(())),
                Some(s) if s.state == "Failed" => {
                    self.refuse_state(&s)?;
                    Err(Error::NotDone {
                        step: "bootstrap".into(),
                        detail: format!(
                            "etcd on {node} failed after the bootstrap: {}. Look at `talosctl -n {node} logs etcd`; to start over on that node, wipe it (`{}`), then `drgit resume`",
                            s.events.join(" / "),
                            self.talos.command_line(&[node.to_string()], &RESET_ARGS)
                        ),
                    })
                }
                Some(s) => Ok(Poll::Waiting(format!(
                    "etcd on {node}: {} (health {}){}",
                    s.state,
                    s.health,
                    s.events.first().map(|e| format!(", {e}")).unwrap_or_default()
                ))),
                None => Ok(Poll::Waiting(format!("{node} does not answer"))),
            },
        )
    }

    fn failed(&self, step: &str, out: &talos::TalosOutput) -> Error {
        Error::NotDone {
            step: step.into(),
            detail: format!("talosctl failed: {}", out.tail(6)),
        }
    }

    /// Polls until `ready` says so, naming the last output on timeout.
    fn wait_for<T>(
        &self,
        step: &str,
        timeout: u64,
        stop: &AtomicBool,
        mut look: impl FnMut() -> Result<Poll<T>, Error>,
    ) -> Result<T, Error> {
        let t = &self.ctx.config.talos;
        let polled = plan::poll_until(
            step,
            Duration::from_secs(timeout),
            (ms(t.poll_ms), MAX_POLL),
            stop,
            |_| look(),
        )?;
        polled.map_err(|t| Error::NotDone {
            step: step.into(),
            detail: format!(
                "not done after {:?}; last seen: {}. Check the nodes (`talosctl dmesg`, `talosctl service etcd`), then `drgit resume`",
                t.waited, t.last
            ),
        })
    }
}

struct BootIds;
impl<'a> Step<Env<'a>> for BootIds {
    fn name(&self) -> &'static str {
        "boot-ids"
    }
    fn describe(&self, e: &Env<'a>) -> String {
        describe(self.name(), e.ctx, &e.params)
    }
    fn run(&self, e: &Env<'a>, _: &Journal, _: &AtomicBool) -> Result<Value, Error> {
        let mut ids = serde_json::Map::new();
        for node in &e.params.control_plane {
            let id = boot_id(&e.talos, node)?.ok_or_else(|| Error::RefuseReset {
                reason: format!("the Talos API of {node} does not answer (reading its boot id)"),
            })?;
            ids.insert(node.clone(), Value::String(id));
        }
        Ok(Value::Object(ids))
    }
}

/// Resets the control planes not reset yet: all of them the first time;
/// after an interrupted or partly refused attempt, only those still on the
/// boot noted before it. A node is never reset twice.
struct Reset;
impl<'a> Step<Env<'a>> for Reset {
    fn name(&self) -> &'static str {
        "reset"
    }
    fn describe(&self, e: &Env<'a>) -> String {
        describe(self.name(), e.ctx, &e.params)
    }
    fn destructive(&self) -> bool {
        true
    }
    fn confirm(&self, e: &Env<'a>, j: &Journal) -> bool {
        // Nothing left to reset: nothing to ask. When that cannot be read, ask.
        e.not_reset(j).map_or(true, |n| !n.is_empty())
    }
    fn check(&self, e: &Env<'a>, j: &Journal) -> Result<(), Error> {
        let pending = e.not_reset(j)?;
        if pending.is_empty() {
            return Ok(());
        }
        // Right before the prompt and again after it (the settle wait was
        // in the plan's check); resumed, only the nodes not reset yet: the
        // others reboot.
        lost_once(&e.talos, &pending)?;
        check_machine_types(&e.talos, &pending)
    }
    fn run(&self, e: &Env<'a>, j: &Journal, _: &AtomicBool) -> Result<Value, Error> {
        let pending = e.not_reset(j)?;
        if pending.is_empty() {
            return Ok(value(serde_json::json!({
                "reset": [],
                "note": "every control plane rebooted since its boot id was noted: none is reset again"
            })));
        }
        let out = e.talos.run(&pending, &RESET_ARGS)?;
        // The reboot may cut the connection before talosctl hears back:
        // the next step tells by the boot ids. Any other failure stops.
        let cut = out.stderr.contains("error reading from server")
            || talos::unreachable(&out.stderr).len() == pending.len();
        if !out.success && !cut {
            return Err(Error::NotDone {
                step: self.name().into(),
                detail: format!(
                    "talosctl failed: {}. `drgit resume` checks and resets only the control planes that did not reboot",
                    out.tail(6)
                ),
            });
        }
        Ok(value(serde_json::json!({"reset": pending})))
    }
}

struct Rebooted;
impl<'a> Step<Env<'a>> for Rebooted {
    fn name(&self) -> &'static str {
        "rebooted"
    }
    fn describe(&self, e: &Env<'a>) -> String {
        describe(self.name(), e.ctx, &e.params)
    }
    fn run(&self, e: &Env<'a>, j: &Journal, stop: &AtomicBool) -> Result<Value, Error> {
        let cps = &e.params.control_plane;
        let noted: std::collections::BTreeMap<String, String> = j.output_as("boot-ids")?;
        e.wait_for(
            self.name(),
            e.ctx.config.talos.reboot_timeout_secs,
            stop,
            || {
                // Each must have rebooted: a node already waiting in
                // Preparing before the reset proves nothing.
                let mut same_boot = Vec::new();
                for n in cps {
                    let now = boot_id(&e.talos, n)?;
                    if now.is_some() && now.as_ref() == noted.get(n) {
                        same_boot.push(format!("{n}: not rebooted yet (same boot id)"));
                    }
                }
                if !same_boot.is_empty() {
                    return Ok(Poll::Waiting(same_boot.join(", ")));
                }
                let out = e.talos.run(cps, &["service", "etcd"])?;
                let down = talos::unreachable(&out.stderr);
                let states = talos::parse_service(&out.stdout);
                for s in &states {
                    e.refuse_state(s)?;
                }
                let waiting: Vec<String> = cps
                    .iter()
                    .filter(|n| !states.iter().any(|s| &s.node == *n && s.preparing()))
                    .map(|n| {
                        if down.contains(n) {
                            format!("{n}: not answering")
                        } else {
                            let st = states.iter().find(|s| &s.node == n);
                            format!("{n}: etcd {}", st.map_or("?", |s| s.state.as_str()))
                        }
                    })
                    .collect();
                Ok(if waiting.is_empty() {
                    Poll::Ready(())
                } else {
                    Poll::Waiting(waiting.join(", "))
                })
            },
        )?;
        Ok(value(serde_json::json!({"preparing": cps})))
    }
}

struct Bootstrap;
impl<'a> Step<Env<'a>> for Bootstrap {
    fn name(&self) -> &'static str {
        "bootstrap"
    }
    fn describe(&self, e: &Env<'a>) -> String {
        describe(self.name(), e.ctx, &e.params)
    }
    fn check(&self, e: &Env<'a>, _: &Journal) -> Result<(), Error> {
        // Right before: the file is still the one verified.
        let sn = &e.params.snapshot;
        let fetch = if Path::new(&sn.source).is_file() {
            String::new()
        } else {
            format!(
                " (`drgit backups download etcd {} -o {}`)",
                sn.source.rsplit('/').next().unwrap_or_default(),
                sn.local.display()
            )
        };
        let gone = |why: String| Error::NotDone {
            step: "bootstrap".into(),
            detail: format!(
                "the snapshot {} {why}; put the verified snapshot back there{fetch}, then `drgit resume`",
                sn.local.display()
            ),
        };
        let sha = sha256_file(&sn.local).map_err(|e| gone(format!("cannot be read ({e})")))?;
        if sha != sn.sha256 {
            return Err(gone(format!(
                "changed since it was verified (SHA-256 {sha}, was {})",
                sn.sha256
            )));
        }
        verify_local(&sn.local, sn.data_dir_copy)
            .map_err(|c| gone(format!("no longer verifies ({c})")))
    }
    fn run(&self, e: &Env<'a>, j: &Journal, stop: &AtomicBool) -> Result<Value, Error> {
        let first = e.first()[0].clone();
        // After an interrupted or failed attempt: what the first node's
        // etcd shows decides whether the command is sent again.
        if j.attempts(self.name()) > 1 {
            match e.etcd_state(&first)? {
                Some(s) if s.state == "Running" => {
                    e.watch_restore(&first, stop)?;
                    return Ok(value(serde_json::json!({
                        "bootstrapped": first,
                        "note": "the earlier attempt bootstrapped it: not sent again"
                    })));
                }
                // Refused before anything was written: send it again.
                Some(s)
                    if s.restore_failed()
                        .is_some_and(|ev| ev.contains("error verifying snapshot")) => {}
                Some(s) => e.refuse_state(&s)?,
                None => {}
            }
        }
        let recover = format!("--recover-from={}", e.params.snapshot.local.display());
        let mut args = vec!["bootstrap", recover.as_str()];
        if e.params.snapshot.data_dir_copy {
            args.push("--recover-skip-hash-check");
        }
        // The upload of the snapshot may take a while.
        let upload = Duration::from_secs(e.ctx.config.talos.upload_timeout_secs);
        let out = e.talos.run_for(e.first(), &args, upload)?;
        let dropped = out.stderr.contains("error reading from server");
        if !out.success && !dropped {
            // Talos refuses a second bootstrap whether the first restore
            // worked or not (v1alpha1_server.go `Bootstrap`: the data dir
            // is not empty): only etcd running says it took.
            if out.stderr.contains("code = AlreadyExists") {
                match e.etcd_state(&first)? {
                    // Running, or still restoring from the earlier attempt
                    // (`Preparing` shows both waiting and restoring).
                    Some(s) if s.state == "Running" || s.state == "Preparing" => {}
                    Some(s) => {
                        e.refuse_state(&s)?;
                        return Err(Error::NotDone {
                            step: self.name().into(),
                            detail: format!(
                                "Talos refused the bootstrap of {first} (its etcd data dir is not empty), yet its etcd is {}: {}. Wipe that node alone (`{}`), then `drgit resume`",
                                s.state,
                                s.events.first().map_or("", String::as_str),
                                e.talos.command_line(e.first(), &RESET_ARGS)
                            ),
                        });
                    }
                    None => return Err(e.failed(self.name(), &out)),
                }
            } else {
                return Err(e.failed(self.name(), &out));
            }
        }
        // talosctl returned once etcd entered its run; the restore comes
        // after (talos v1.11 internal/app/machined/pkg/system/system.go
        // `Start`, services/etcd.go `recoverFromSnapshot`).
        e.watch_restore(&first, stop)?;
        Ok(value(serde_json::json!({"bootstrapped": first})))
    }
}

struct Joined;
impl<'a> Step<Env<'a>> for Joined {
    fn name(&self) -> &'static str {
        "joined"
    }
    fn describe(&self, e: &Env<'a>) -> String {
        describe(self.name(), e.ctx, &e.params)
    }
    fn run(&self, e: &Env<'a>, _: &Journal, stop: &AtomicBool) -> Result<Value, Error> {
        let cps = &e.params.control_plane;
        let members = e.wait_for(
            self.name(),
            e.ctx.config.talos.join_timeout_secs,
            stop,
            || {
                let out = e.talos.run(e.first(), &["etcd", "members"])?;
                if !out.success {
                    return Ok(Poll::Waiting(format!("etcd members: {}", out.tail(1))));
                }
                let hosts = talos::member_hosts(&out.stdout);
                let missing: Vec<&String> = cps.iter().filter(|c| !hosts.contains(c)).collect();
                // A node that gave up waiting does not join by itself.
                for node in &missing {
                    if let Some(s) = e.etcd_state(node)? {
                        e.refuse_state(&s)?;
                    }
                }
                Ok(if missing.is_empty() {
                    Poll::Ready(hosts)
                } else {
                    Poll::Waiting(format!(
                        "members {}; not yet: {}",
                        hosts.join(", "),
                        missing
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
            },
        )?;
        Ok(value(serde_json::json!({"members": members})))
    }
}

struct Health;
impl<'a> Step<Env<'a>> for Health {
    fn name(&self) -> &'static str {
        "health"
    }
    fn describe(&self, e: &Env<'a>) -> String {
        describe(self.name(), e.ctx, &e.params)
    }
    fn run(&self, e: &Env<'a>, _: &Journal, _: &AtomicBool) -> Result<Value, Error> {
        let args = health_args(e.ctx, &e.params);
        // talosctl waits up to --wait-timeout itself.
        let out = e.talos.run_for(
            e.first(),
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            Duration::from_secs(e.ctx.config.talos.join_timeout_secs) + e.talos.timeout,
        )?;
        if !out.success {
            return Err(e.failed(self.name(), &out));
        }
        Ok(value(
            serde_json::json!({"healthy": true, "report": out.tail(10)}),
        ))
    }
}

/// The journal's scenario name: `drgit resume` finds this plan by it.
pub const SCENARIO: &str = "etcd-recover";

/// Goes on with a journaled run (`drgit resume`).
pub fn resume(ctx: &Context, journal: Journal, yes: bool) -> Result<Value, Error> {
    drive(ctx, journal, yes)
}

fn drive(ctx: &Context, journal: Journal, yes: bool) -> Result<Value, Error> {
    let params: Params = journal.params_as()?;
    let confirmation = match &ctx.config.talos.cluster_name {
        Some(name) => plan::Confirmation {
            yes,
            word: name.clone(),
            what: "the cluster's name".into(),
        },
        None => plan::Confirmation {
            yes,
            word: "reset".into(),
            what: "the word".into(),
        },
    };
    let env = Env {
        ctx,
        talos: talosctl(ctx),
        params,
    };
    let steps: Vec<&dyn Step<Env>> =
        vec![&BootIds, &Reset, &Rebooted, &Bootstrap, &Joined, &Health];
    plan::drive(&env, &steps, journal, &confirmation)
}
