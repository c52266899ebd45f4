//! `drgit pg-recover … --wait`: the runbook's imperative part, in the
//! corrected order, each step checked and journaled.
//!
//! 1. The running Cluster's uid is noted: it is the Cluster to replace.
//! 2. Fence it (confirmed): first, where the old primary still runs, switch
//!    WAL and wait until that segment is archived (the newest commits reach
//!    the bucket), then the fence. A running primary archives under the
//!    live spec's serverName, read at each WAL file, so once Argo CD applied
//!    the change it would fill the new lineage, and the recovery would fail
//!    with "Expected empty archive".
//! 3. The recovery commit is on the branch Argo CD tracks (the pull
//!    request is merged, or, with `--direct`, the commit is pushed now).
//! 4. Argo CD refreshes, and the Application that deploys the manifest
//!    reports Synced at a revision that contains the commit and holds the
//!    same manifest.
//! 5. Only then the Cluster is deleted (confirmed; refused unless Argo CD
//!    is synced so, the live Cluster has the recovery spec and the new
//!    lineage, is fenced, and the new lineage is still empty in the store).
//! 6. The Cluster comes back with a new uid; without Argo CD self-heal,
//!    drgit starts the sync that re-creates it.
//! 7. The recovery is watched until the re-created Cluster is healthy and
//!    its recovery Job complete; a Failed Job stops it with its log.
//! 8. An on-demand Backup, and ContinuousArchiving True: the new lineage is
//!    recoverable at once.
//! 9. With auto-revert recorded, the revert pull request is opened.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Context;
use super::delivery::{
    ArgoSynced, Delivers, Delivery, MAX_POLL, Merge, SyncDriver, Synced, Target, ms, value,
};
use super::pg_revert::AutoRevert;
use crate::cluster::argocd::SyncResource;
use crate::cluster::{ClusterState, JobState, Kube};
use crate::error::Error;
use crate::gitops::WorkRepo;
use crate::plan::{self, Journal, Poll, Step};

/// What the wait needs to know; kept in the journal for `drgit resume`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Params {
    pub cluster: String,
    pub namespace: String,
    pub manifest_dir: String,
    /// The manifest, relative to the repository top.
    #[serde(default)]
    pub manifest: PathBuf,
    /// The lineage the recovered Cluster archives under.
    #[serde(default)]
    pub new_lineage: String,
    /// The recovery pull request, or None when the commit goes in directly.
    pub pr: Option<u64>,
    /// With `--direct`: the local commit on the tracked branch, pushed by
    /// the plan once the old Cluster is fenced.
    pub commit: Option<String>,
    #[serde(default)]
    pub direct_branch: Option<String>,
    pub auto_revert: bool,
}

struct Env<'a> {
    d: Delivery<'a>,
    params: Params,
}

impl<'a> Delivers<'a> for Env<'a> {
    fn delivery(&self) -> &Delivery<'a> {
        &self.d
    }
}

/// The Cluster as it was before anything happened (step 1).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OldCluster {
    /// None when there was no Cluster (nothing to switch, fence or delete).
    pub uid: Option<String>,
    #[serde(default)]
    pub primary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Deleted {
    deleted: bool,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NewCluster {
    uid: String,
    sync_started: bool,
}

impl Env<'_> {
    fn old(&self, j: &Journal) -> Result<OldCluster, Error> {
        j.output_as("old-cluster")
    }

    /// The live Cluster while it is still the one recorded at the start
    /// (same uid); None when it is gone or was re-created.
    fn old_live(&self, j: &Journal) -> Result<Option<ClusterState>, Error> {
        let old = self.old(j)?;
        Ok(self
            .live()?
            .filter(|s| old.uid.is_some() && s.uid == old.uid))
    }

    fn live(&self) -> Result<Option<ClusterState>, Error> {
        Ok(self
            .d
            .kube
            .cnpg_cluster(&self.params.namespace, &self.params.cluster)?)
    }

    fn psql(&self, pod: &str, sql: &str) -> Result<String, String> {
        let out = self
            .d
            .kube
            .exec(
                &self.params.namespace,
                pod,
                Some("postgres"),
                &["psql", "-U", "postgres", "-AtX", "-c", sql],
            )
            .map_err(|e| e.to_string())?;
        if !out.success {
            return Err(format!("{} {}", out.message, out.stderr.trim()));
        }
        Ok(out.stdout.trim().to_string())
    }

    /// The objects already in the new lineage (at most a few).
    fn new_lineage_objects(&self) -> Result<Vec<String>, Error> {
        let store = self.d.ctx.open_store()?;
        let prefix = format!(
            "{}{}/",
            self.d.ctx.config.postgres.catalog_prefix, self.params.new_lineage
        );
        Ok(store
            .list(&prefix)?
            .into_iter()
            .map(|o| o.key)
            .take(3)
            .collect())
    }

    fn lineage_not_empty(&self, objects: Vec<String>) -> Error {
        Error::NewLineageNotEmpty {
            lineage: self.params.new_lineage.clone(),
            objects: objects.join(", "),
        }
    }
}

struct OldClusterStep;
impl<'a> Step<Env<'a>> for OldClusterStep {
    fn name(&self) -> &'static str {
        "old-cluster"
    }
    fn describe(&self, e: &Env<'a>) -> String {
        format!(
            "Note the running Cluster {}/{} (its uid and primary): the one to stop and replace",
            e.params.namespace, e.params.cluster
        )
    }
    fn run(&self, e: &Env<'a>, _: &Journal, _stop: &AtomicBool) -> Result<Value, Error> {
        Ok(value(match e.live()? {
            None => OldCluster {
                note: Some("no Cluster: nothing runs, nothing archives".into()),
                ..OldCluster::default()
            },
            Some(live) => OldCluster {
                uid: live.uid.clone(),
                primary: live.current_primary.clone(),
                ..OldCluster::default()
            },
        }))
    }
}

/// What the fence step did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Fenced {
    fenced: bool,
    /// The WAL segment the last switch completed, once archived.
    #[serde(default)]
    archived: Option<String>,
    /// How many times WAL was switched (again when commits came in while
    /// the previous segment was being archived).
    #[serde(default)]
    switches: u32,
    /// The newest commit in `archived`, read back from the bucket: the
    /// newest commit a recovery to the end of the WAL reaches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    newest_commit: Option<String>,
    /// The instances seen with PostgreSQL down once the fence took.
    #[serde(default)]
    down: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

/// psql's words when PostgreSQL does not take connections in the pod
/// (fenced, crashed, starting, shutting down): then there is nothing to
/// switch.
fn not_running(why: &str) -> bool {
    why.contains("connection to server") || why.contains("No such file or directory")
}

/// psql's words when no postmaster runs in the pod: its socket is gone
/// (psql 15: `connection to server on socket "…" failed: No such file or
/// directory`). While a fast shutdown is still under way psql says `FATAL:
/// the database system is shutting down` instead, and the archiver still
/// runs.
fn postmaster_gone(why: &str) -> bool {
    why.contains("No such file or directory") && !why.contains("shutting down")
}

/// What one `pg_switch_wal()` answered.
struct Switched {
    segment: String,
    xmax: u64,
    in_progress: u64,
}

/// The segment before `name` on its timeline, within its log file.
fn previous_segment(name: &str) -> Option<String> {
    let seg = u32::from_str_radix(name.get(16..24)?, 16)
        .ok()?
        .checked_sub(1)?;
    Some(format!("{}{seg:08X}", name.get(..16)?))
}

/// At most this many switches before the fence: under a steady write load
/// each wait for the archive lets new commits in, and the fence must come.
const MAX_SWITCHES: u32 = 3;

/// The Cluster's instance pods: CNPG labels each with its Cluster and
/// `cnpg.io/podRole=instance`; Job pods carry `cnpg.io/jobRole` instead
/// (cloudnative-pg v1.25.0 and v1.30.0 pkg/specs/pods.go, pkg/specs/jobs.go).
fn instance_selector(cluster: &str) -> String {
    format!("cnpg.io/cluster={cluster},cnpg.io/podRole=instance")
}

impl Fence {
    /// `pg_switch_wal()` on the primary: the segment the switch completed
    /// (`pg_walfile_name` of the switch point), the next transaction id
    /// not yet assigned (`pg_snapshot_xmax`) and how many transactions
    /// with an id were in progress (`pg_snapshot_xip`). None when
    /// PostgreSQL does not run there.
    fn switch_once(&self, e: &Env, primary: &str) -> Result<Option<Switched>, Error> {
        let answer = e.psql(
            primary,
            "select pg_walfile_name(pg_switch_wal()) || ' ' || pg_snapshot_xmax(pg_current_snapshot()) || ' ' || (select count(*) from pg_snapshot_xip(pg_current_snapshot()))",
        );
        let parsed = answer.as_ref().ok().and_then(|s| {
            let mut it = s.split_whitespace();
            let segment = it.next().filter(|s| s.len() == 24)?.to_string();
            let xmax = it.next()?.parse().ok()?;
            let in_progress = it.next()?.parse().ok()?;
            Some(Switched {
                segment,
                xmax,
                in_progress,
            })
        });
        match answer {
            Ok(_) if parsed.is_some() => Ok(parsed),
            Err(why) if not_running(&why) => Ok(None),
            Ok(other) => Err(Error::NotDone {
                step: "fence".into(),
                detail: format!(
                    "pg_switch_wal() on {primary} answered {other:?}; switch WAL by hand (`select pg_switch_wal()`), then `drgit resume`"
                ),
            }),
            Err(why) => Err(Error::NotDone {
                step: "fence".into(),
                detail: format!(
                    "pg_switch_wal() on {primary} failed ({why}); the newest commits may not be archived. Switch WAL by hand, then `drgit resume`"
                ),
            }),
        }
    }

    /// The next transaction id not yet assigned.
    fn xmax(&self, e: &Env, primary: &str) -> Option<u64> {
        e.psql(primary, "select pg_snapshot_xmax(pg_current_snapshot())")
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Waits until `segment` is archived (`pg_stat_archiver`).
    fn wait_archived(
        &self,
        e: &Env,
        primary: &str,
        segment: &str,
        stop: &AtomicBool,
    ) -> Result<(), Error> {
        let wait = Duration::from_secs(e.d.ctx.config.postgres.archive_timeout_secs);
        let polled = plan::poll_until(
            self.name(),
            wait,
            (ms(e.d.ctx.config.postgres.health_poll_ms), MAX_POLL),
            stop,
            |_| {
                let last = e
                    .psql(
                        primary,
                        "select coalesce(last_archived_wal, '') from pg_stat_archiver",
                    )
                    .unwrap_or_default();
                // Same timeline and width: names order as positions do. A
                // backup history file (`<segment>.<offset>.backup`) counts
                // as its segment.
                let last_segment = last.get(..24).unwrap_or_default();
                Ok(if last_segment.len() == 24 && last_segment >= segment {
                    Poll::Ready(last)
                } else {
                    Poll::Waiting(format!(
                        "waiting for {segment} to be archived (last archived: {last})"
                    ))
                })
            },
        )?;
        polled.map(|_| ()).map_err(|t| Error::NotArchived {
            segment: segment.to_string(),
            waited: t.waited,
            last: t.last,
        })
    }

    /// Switches WAL and waits for the archive, again while transactions
    /// could have committed meanwhile (at most [`MAX_SWITCHES`] times):
    /// the fence's fast shutdown archives the segments already complete,
    /// not the one in use (checked with PostgreSQL 15: `pg_ctl stop -m
    /// fast` leaves it in pg_wal; CNPG's Shutdown only checkpoints first,
    /// cloudnative-pg v1.30.0 pkg/management/postgres/instance.go), so
    /// what commits after the last switch is not in the bucket. A commit
    /// that writes needs a transaction id: none in progress at the switch
    /// and none assigned since means none came (a new segment name alone
    /// says nothing: PostgreSQL logs a standby snapshot into it by itself).
    fn switch_wal(
        &self,
        e: &Env,
        primary: &str,
        out: &mut Fenced,
        stop: &AtomicBool,
    ) -> Result<(), Error> {
        while out.switches < MAX_SWITCHES {
            let Some(sw) = self.switch_once(e, primary)? else {
                break;
            };
            out.switches += 1;
            self.wait_archived(e, primary, &sw.segment, stop)?;
            out.archived = Some(sw.segment);
            if sw.in_progress == 0 && self.xmax(e, primary) == Some(sw.xmax) {
                break; // nothing committed since the switch
            }
        }
        Ok(())
    }

    /// The newest commit in the archived `segment` of `lineage`, read
    /// back from the bucket; a note when it cannot be read (the recovery
    /// does not depend on it).
    /// The newest commit in the archived `segment` of `lineage` or, when
    /// it has none (a switch with nothing committed before it), in the
    /// [`MAX_SWITCHES`] segments before it; read back from the bucket. An
    /// error says why not (the recovery does not depend on it).
    fn newest_commit(
        &self,
        e: &Env,
        lineage: &str,
        segment: &str,
    ) -> Result<(String, String), String> {
        let store = e.d.ctx.open_store().map_err(|x| x.to_string())?;
        let mut name = segment.to_string();
        for _ in 0..=MAX_SWITCHES {
            let prefix = format!(
                "{}{lineage}/wals/{}/{name}",
                e.d.ctx.config.postgres.catalog_prefix,
                &name[..16]
            );
            // The segment itself, not a backup history file beside it.
            let key = store
                .list(&prefix)
                .map_err(|x| x.to_string())?
                .into_iter()
                .map(|o| o.key)
                .find(|k| {
                    crate::backup::barman::parse_segment(k.rsplit('/').next().unwrap_or_default())
                        .is_some()
                })
                .ok_or_else(|| format!("{prefix} is not in the bucket"))?;
            let bytes = store.get(&key).map_err(|x| x.to_string())?;
            if let Some(t) =
                crate::backup::wal::newest_in_object(&key, &bytes).map_err(|x| x.to_string())?
            {
                return Ok((crate::timearg::Second(t).to_string(), name));
            }
            match previous_segment(&name) {
                Some(p) => name = p,
                None => break,
            }
        }
        Err(format!("no commit in {segment} or the segments before it"))
    }

    /// Waits until PostgreSQL is down in every instance: the fence only
    /// asks the instance manager for a fast shutdown (cloudnative-pg
    /// v1.30.0 pkg/management/postgres/instance.go, timeout
    /// `maxSwitchoverDelay`), and until it is down the primary archives
    /// under the live spec. Down: psql fails in each instance pod as it
    /// does with no server, and the status counts no ready instance or no
    /// pod is Ready (the readiness probe is `pg_isready`; readyInstances
    /// counts Ready pods, pkg/reconciler/persistentvolumeclaim/status.go).
    fn wait_down(&self, e: &Env, stop: &AtomicBool) -> Result<Vec<String>, Error> {
        let (ns, name) = (&e.params.namespace, &e.params.cluster);
        let pg = &e.d.ctx.config.postgres;
        let polled = plan::poll_until(
            self.name(),
            Duration::from_secs(pg.fence_timeout_secs),
            (ms(pg.health_poll_ms), MAX_POLL),
            stop,
            |_| {
                let Some(live) = e.live()? else {
                    return Ok(Poll::Ready(Vec::new()));
                };
                let pods = e.d.kube.pods(ns, &instance_selector(name))?;
                let mut up = Vec::new();
                for pod in pods.iter().filter(|p| p.phase == "Running") {
                    match e.psql(&pod.name, "select 1") {
                        Err(why) if postmaster_gone(&why) => {}
                        Err(why) if why.contains("shutting down") => {
                            up.push(format!("{}: PostgreSQL is still shutting down", pod.name));
                        }
                        Err(why) => up.push(format!("{}: psql failed otherwise ({why})", pod.name)),
                        Ok(_) => up.push(format!("{}: PostgreSQL still answers", pod.name)),
                    }
                }
                let ready: Vec<&str> = pods
                    .iter()
                    .filter(|p| p.ready)
                    .map(|p| p.name.as_str())
                    .collect();
                if up.is_empty() && (live.ready_instances == 0 || ready.is_empty()) {
                    return Ok(Poll::Ready(pods.into_iter().map(|p| p.name).collect()));
                }
                if up.is_empty() {
                    up.push(format!(
                        "{} ready instance(s) in the status, pods Ready: {}",
                        live.ready_instances,
                        ready.join(", ")
                    ));
                }
                Ok(Poll::Waiting(format!(
                    "fenced, waiting for PostgreSQL to stop: {}",
                    up.join("; ")
                )))
            },
        )?;
        polled.map_err(|t| Error::FenceNotTaken {
            namespace: ns.clone(),
            name: name.clone(),
            waited: t.waited,
            last: t.last,
        })
    }
}

struct Fence;
impl<'a> Step<Env<'a>> for Fence {
    fn name(&self) -> &'static str {
        "fence"
    }
    fn describe(&self, e: &Env<'a>) -> String {
        format!(
            "Switch WAL on the old primary of {}/{} and wait until that segment is archived (again while commits came in meanwhile, at most {MAX_SWITCHES} switches; what is committed after the last switch is not in the bucket), then fence the Cluster (annotation cnpg.io/fencedInstances: '[\"*\"]') and wait until PostgreSQL is down in every instance, so that it cannot archive into the new lineage `{}`",
            e.params.namespace, e.params.cluster, e.params.new_lineage
        )
    }
    fn destructive(&self) -> bool {
        true
    }
    fn confirm(&self, e: &Env<'a>, j: &Journal) -> bool {
        // Nothing to stop: no old Cluster, already fenced, or replaced.
        // When that cannot be read, ask.
        e.old_live(j)
            .map_or(true, |live| live.is_some_and(|s| !s.fenced))
    }
    fn run(&self, e: &Env<'a>, j: &Journal, stop: &AtomicBool) -> Result<Value, Error> {
        let live = match e.old_live(j)? {
            Some(s) => s,
            None => {
                return Ok(value(Fenced {
                    note: Some("no old Cluster to fence".into()),
                    ..Fenced::default()
                }));
            }
        };
        let mut out = Fenced {
            fenced: true,
            ..Fenced::default()
        };
        if live.fenced {
            out.note = Some("already fenced".into());
        } else {
            // Right after the confirmation and right before the fence: the
            // commits made until then reach the bucket.
            if let Some(primary) = &live.current_primary {
                self.switch_wal(e, primary, &mut out, stop)?;
                let lineage = live.server_name.as_deref().unwrap_or(&e.params.cluster);
                out.note = Some(match &out.archived {
                    None => format!("PostgreSQL does not run on {primary}: nothing to switch"),
                    Some(seg) => match self.newest_commit(e, lineage, seg) {
                        Ok((t, found)) => {
                            out.newest_commit = Some(t.clone());
                            format!(
                                "in the bucket up to {seg} of `{lineage}`: the newest commit there is at {t} (in {found}); anything committed after the last switch is not"
                            )
                        }
                        Err(why) => format!(
                            "in the bucket up to {seg} of `{lineage}` ({why}); anything committed after the last switch is not"
                        ),
                    },
                });
            }
            e.d.kube
                .fence_cnpg_cluster(&e.params.namespace, &e.params.cluster)?;
        }
        out.down = self.wait_down(e, stop)?;
        // Argo CD may have applied the change before the fence took (a
        // fast merge): whatever the old primary archived there rules the
        // lineage out. The fence stays: it stops the writing.
        let server_name = e.live()?.and_then(|s| s.server_name);
        if [live.server_name.as_deref(), server_name.as_deref()]
            .contains(&Some(e.params.new_lineage.as_str()))
        {
            let objects = e.new_lineage_objects()?;
            if !objects.is_empty() {
                return Err(e.lineage_not_empty(objects));
            }
        }
        Ok(value(out))
    }
    fn verify(&self, e: &Env<'a>, j: &Journal, out: &Value) -> Result<(), Error> {
        let out: Fenced = serde_json::from_value(out.clone()).unwrap_or_default();
        if !out.fenced {
            return Ok(());
        }
        match e.old_live(j)? {
            Some(s) if !s.fenced => Err(Error::NotDone {
                step: "fence".into(),
                detail: "the fence was accepted but the Cluster does not show it (cnpg.io/fencedInstances); check the Cluster, then `drgit resume`".into(),
            }),
            _ => Ok(()),
        }
    }
}

struct Delete;
impl<'a> Step<Env<'a>> for Delete {
    fn name(&self) -> &'static str {
        "delete-cluster"
    }
    fn describe(&self, e: &Env<'a>) -> String {
        format!(
            "Delete the CNPG Cluster {}/{} (foreground: its pods go first, its volumes may outlive it; never orphaned), refused unless Argo CD is synced at the recovery commit, the live Cluster has the recovery spec and the new lineage, is fenced, and the new lineage is still empty; Argo CD re-creates it from Git in recovery mode",
            e.params.namespace, e.params.cluster
        )
    }
    fn destructive(&self) -> bool {
        true
    }
    fn confirm(&self, e: &Env<'a>, j: &Journal) -> bool {
        // Nothing to delete: gone or re-created. When that cannot be read, ask.
        e.old_live(j).map_or(true, |live| live.is_some())
    }
    fn check(&self, e: &Env<'a>, j: &Journal) -> Result<(), Error> {
        let a = &e.d.ctx.config.argocd;
        let commit = e.d.merged_commit(j)?;
        let synced: Synced = j.output_as("argocd-synced")?;
        let app = e.d.kube.application(&a.namespace, &synced.application)?;
        if !app.synced() || e.d.holding_revision(&app, &commit)?.is_none() {
            return Err(Error::RefuseDelete {
                reason: format!(
                    "Argo CD Application {} is {}, not Synced at a revision containing the recovery commit {commit}; deleting now could bring the Cluster back from the old manifest, empty",
                    app.name,
                    app.describe()
                ),
            });
        }
        let Some(live) = e.old_live(j)? else {
            // Gone already, or Argo CD created a new one: nothing to delete.
            return Ok(());
        };
        if !live.recovering_spec {
            return Err(Error::RefuseDelete {
                reason: "the live Cluster still bootstraps with initdb: Argo CD has not applied the recovery manifest".into(),
            });
        }
        if live.server_name.as_deref() != Some(e.params.new_lineage.as_str()) {
            return Err(Error::RefuseDelete {
                reason: format!(
                    "the live Cluster archives as `{}`, not the new lineage `{}`: Argo CD has not applied the whole recovery manifest",
                    live.server_name.as_deref().unwrap_or("?"),
                    e.params.new_lineage
                ),
            });
        }
        if !live.fenced {
            return Err(Error::RefuseDelete {
                reason:
                    "the old Cluster is not fenced: its primary would archive into the new lineage"
                        .into(),
            });
        }
        let objects = e.new_lineage_objects()?;
        if !objects.is_empty() {
            return Err(e.lineage_not_empty(objects));
        }
        Ok(())
    }
    fn run(&self, e: &Env<'a>, j: &Journal, _stop: &AtomicBool) -> Result<Value, Error> {
        match e.old_live(j)?.and_then(|s| s.uid) {
            Some(uid) => {
                e.d.kube
                    .delete_cnpg_cluster(&e.params.namespace, &e.params.cluster, &uid)?;
                Ok(value(Deleted {
                    deleted: true,
                    note: None,
                }))
            }
            None => Ok(value(Deleted {
                deleted: false,
                note: Some("the old Cluster was gone already".into()),
            })),
        }
    }
    fn verify(&self, e: &Env<'a>, j: &Journal, _: &Value) -> Result<(), Error> {
        // Gone, on its way out (foreground deletion), or already back with
        // a new uid: anything but the old Cluster, unchanged.
        match e.old_live(j)? {
            Some(s) if !s.terminating => {
                Err(Error::NotDone {
                    step: "delete-cluster".into(),
                    detail: "the delete was accepted but the old Cluster is still there, not being deleted; check its finalizers, then `drgit resume`".into(),
                })
            }
            _ => Ok(()),
        }
    }
}

struct Recreate;
impl<'a> Step<Env<'a>> for Recreate {
    fn name(&self) -> &'static str {
        "recreated"
    }
    fn describe(&self, _: &Env<'a>) -> String {
        "Wait until Argo CD re-creates the Cluster (a new uid); without self-heal, start the sync that does once no volume of the old one remains".into()
    }
    fn run(&self, e: &Env<'a>, j: &Journal, stop: &AtomicBool) -> Result<Value, Error> {
        let a = &e.d.ctx.config.argocd;
        let old = e.old(j)?;
        let synced: Synced = j.output_as("argocd-synced")?;
        let grace = Duration::from_secs(a.self_heal_grace_secs);
        // Only the Cluster: the rest of the Application is in sync, and a
        // partial sync runs no hooks (argo-cd controller/sync.go).
        let mut driver = SyncDriver::new(
            synced.revision.clone(),
            vec![SyncResource {
                group: "postgresql.cnpg.io".into(),
                kind: "Cluster".into(),
                name: e.params.cluster.clone(),
                namespace: e.params.namespace.clone(),
            }],
            "re-create the deleted CNPG Cluster in recovery mode",
        );
        let polled = plan::poll_until(
            self.name(),
            Duration::from_secs(a.sync_timeout_secs),
            (ms(a.poll_ms), MAX_POLL),
            stop,
            |elapsed| {
                match e.live()? {
                    Some(s) if s.uid != old.uid && !s.terminating => {
                        return Ok(Poll::Ready(s.uid.unwrap_or_default()));
                    }
                    Some(s) if s.terminating => {
                        return Ok(Poll::Waiting(
                            "the old Cluster is being deleted (its pods and volumes first)".into(),
                        ));
                    }
                    Some(_) => return Ok(Poll::Waiting("the old Cluster is still there".into())),
                    None => {}
                }
                // Volumes first: the PVCs are owned without
                // blockOwnerDeletion, so they may still be terminating, and
                // CNPG before 1.30 would bind the recovery to them
                // (cloudnative-pg #11017).
                let pvcs = e.d.kube.pvcs(
                    &e.params.namespace,
                    &format!("cnpg.io/cluster={}", e.params.cluster),
                )?;
                // One that is not being deleted would be adopted by the new
                // Cluster, which would then start from its old data and
                // skip the recovery.
                if let Some((pvc, _)) = pvcs.iter().find(|(_, deleting)| !deleting) {
                    return Err(Error::NotDone {
                        step: "recreated".into(),
                        detail: format!(
                            "the Cluster is gone but its volume {pvc} is not being deleted (orphaned?): a re-created Cluster would adopt it and start from the old data instead of recovering. Delete it (`kubectl -n {} delete pvc {pvc}`), then `drgit resume`",
                            e.params.namespace
                        ),
                    });
                }
                if let Some((pvc, _)) = pvcs.first() {
                    return Ok(Poll::Waiting(format!(
                        "deleted; waiting for its volume {pvc} to be removed before the Cluster is re-created ({} left)",
                        pvcs.len()
                    )));
                }
                // Argo CD does not re-create a resource deleted at an
                // already-synced revision without self-heal: start the
                // sync (again, when it ended Failed or Error).
                if !synced.self_heal || elapsed >= grace {
                    let app = e.d.kube.application(&a.namespace, &synced.application)?;
                    if let Some(note) = driver.poke(&e.d.kube, &a.namespace, &app)? {
                        return Ok(Poll::Waiting(format!("deleted; {note}")));
                    }
                }
                Ok(Poll::Waiting(
                    "deleted; waiting for Argo CD to re-create it".into(),
                ))
            },
        )?;
        let sync_started = driver.started();
        match polled {
            Ok(uid) => Ok(value(NewCluster { uid, sync_started })),
            Err(t) => Err(Error::NotRecreated {
                namespace: e.params.namespace.clone(),
                name: e.params.cluster.clone(),
                waited: t.waited,
                last: t.last,
            }),
        }
    }
}

/// What the live Cluster and its recovery Job say about a recovery.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The re-created Cluster is healthy and its recovery Job complete.
    Recovered,
    /// CNPG gave up (PhaseUnrecoverable).
    Unrecoverable(String),
    /// CNPG's status names why the recovery cannot finish.
    Failed(String),
    /// The recovery Job's Failed condition is True.
    JobFailed(String),
    /// The Cluster runs with initdb: it was not re-created from the backup.
    NotRecovery,
    Waiting(String),
}

/// Judges one look at the Cluster and its Job. Pure: the rules in one
/// place. `old_uid` is the Cluster that was deleted: its status, frozen
/// while it terminates, says nothing about the recovery.
pub fn judge(
    state: Option<&ClusterState>,
    job: Option<&JobState>,
    old_uid: Option<&str>,
) -> Verdict {
    let Some(s) = state else {
        return Verdict::Waiting("no Cluster (being re-created)".into());
    };
    if old_uid.is_some() && s.uid.as_deref() == old_uid {
        return Verdict::Waiting(format!(
            "still the old Cluster (uid {}){}",
            old_uid.unwrap_or_default(),
            if s.terminating { ", being deleted" } else { "" }
        ));
    }
    if s.terminating {
        return Verdict::Waiting("the Cluster is being deleted".into());
    }
    if s.unrecoverable() {
        return Verdict::Unrecoverable(s.phase.clone().unwrap_or_default());
    }
    if let Some(j) = job
        && j.failed_for_good
    {
        return Verdict::JobFailed(format!(
            "Job {} failed{}",
            j.name,
            j.failed_message
                .as_ref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
    }
    if let Some(f) = s.failure() {
        return Verdict::Failed(f);
    }
    if !s.recovering_spec {
        return Verdict::NotRecovery;
    }
    // CNPG deletes a completed recovery Job; a failed one stays. A healthy
    // re-created Cluster without its Job has completed it.
    if s.healthy() && job.is_none_or(|j| j.complete) {
        return Verdict::Recovered;
    }
    Verdict::Waiting(format!(
        "{}{}",
        s.describe(),
        job.map(|j| format!(
            "; job {}: {} active, {} succeeded, {} failed{}",
            j.name,
            j.active,
            j.succeeded,
            j.failed,
            if j.failed > 0 && !j.failed_for_good {
                " (Kubernetes retries)"
            } else {
                ""
            }
        ))
        .unwrap_or_default()
    ))
}

/// Watches a recovery until the re-created Cluster is healthy: the wait
/// of `pg-recover --wait` and of `pg-revert --when-healthy`.
pub fn watch_recovery(
    ctx: &Context,
    kube: &Kube,
    old_uid: Option<&str>,
    stop: &AtomicBool,
) -> Result<ClusterState, Error> {
    watch_recovery_of(ctx, kube, &ctx.config.postgres.cluster, old_uid, stop)
}

/// [`watch_recovery`] of the Cluster `name` (a drill's throwaway one).
pub fn watch_recovery_of(
    ctx: &Context,
    kube: &Kube,
    name: &str,
    old_uid: Option<&str>,
    stop: &AtomicBool,
) -> Result<ClusterState, Error> {
    let pg = &ctx.config.postgres;
    let ns = &pg.namespace;
    let name = &name.to_string();
    let job_name = format!("{name}-1-full-recovery");
    let mut last_state = None;
    let mut seen_stuck: Option<String> = None;
    let polled = plan::poll_until(
        "recovered",
        Duration::from_secs(pg.recovery_timeout_secs),
        (ms(pg.health_poll_ms), MAX_POLL),
        stop,
        |_| {
            let state = kube.cnpg_cluster(ns, name)?;
            // Only the Job of this Cluster counts: a leftover of another
            // (its owner deleted in the background) says nothing.
            let job = kube.job(ns, &job_name)?.filter(|j| {
                j.owner_uid.is_none() || j.owner_uid == state.as_ref().and_then(|s| s.uid.clone())
            });
            let failed = |text: String| -> Error {
                let log = kube.job_log_tail(ns, &job_name, 20).unwrap_or_default();
                Error::RecoveryFailed {
                    namespace: ns.clone(),
                    name: name.clone(),
                    text: if log.is_empty() {
                        text
                    } else {
                        format!("{text}\n{log}")
                    },
                }
            };
            let verdict = judge(state.as_ref(), job.as_ref(), old_uid);
            last_state = state.clone();
            match verdict {
                Verdict::Recovered => Ok(Poll::Ready(state.unwrap_or_default())),
                Verdict::Unrecoverable(phase) => Err(failed(phase)),
                Verdict::Failed(text) | Verdict::JobFailed(text) => Err(failed(text)),
                Verdict::NotRecovery => Err(Error::NotRecovered {
                    namespace: ns.clone(),
                    name: name.clone(),
                }),
                Verdict::Waiting(seen) => {
                    let pods = kube
                        .pods(ns, &format!("cnpg.io/cluster={name}"))
                        .unwrap_or_default();
                    // Twice in a row: a PVC the scheduler has not seen yet
                    // is "not found" for a moment.
                    let stuck = stuck_on_old_volume(&pods);
                    if let Some((pod, message)) = stuck.clone()
                        && seen_stuck.as_ref() == Some(&pod)
                    {
                        return Err(Error::StuckOnOldVolume {
                            namespace: ns.clone(),
                            name: name.clone(),
                            pod,
                            message,
                        });
                    }
                    seen_stuck = stuck.map(|(pod, _)| pod);
                    Ok(Poll::Waiting(if pods.is_empty() {
                        seen
                    } else {
                        format!(
                            "{seen}; pods {}",
                            pods.iter()
                                .map(|p| format!("{}={}", p.name, p.phase))
                                .collect::<Vec<_>>()
                                .join(" ")
                        )
                    }))
                }
            }
        },
    )?;
    polled.map_err(|t| Error::Timeout {
        namespace: ns.clone(),
        name: name.clone(),
        waited: t.waited,
        last: t.last,
    })
}

/// A pod of the re-created Cluster the scheduler cannot place because a
/// volume it uses is being deleted, or is gone: the scheduler's
/// VolumeBinding plugin says `persistentvolumeclaim "NAME" is being
/// deleted`, then, once it went, the lister's `persistentvolumeclaim "NAME"
/// not found` (kubernetes v1.33 pkg/scheduler/framework/plugins/
/// volumebinding/volume_binding.go `podHasPVCs`), which the pod's
/// PodScheduled condition carries. Such a volume was the deleted
/// Cluster's (same name); nothing creates it again.
pub fn stuck_on_old_volume(pods: &[crate::cluster::PodInfo]) -> Option<(String, String)> {
    pods.iter().find_map(|p| {
        let m = p.unschedulable.as_ref()?;
        (p.phase == "Pending"
            && m.contains("persistentvolumeclaim \"")
            && (m.contains("is being deleted") || m.contains("not found")))
        .then(|| (p.name.clone(), m.clone()))
    })
}

struct Recovered;
impl<'a> Step<Env<'a>> for Recovered {
    fn name(&self) -> &'static str {
        "recovered"
    }
    fn describe(&self, e: &Env<'a>) -> String {
        format!(
            "Watch the re-created Cluster and Job {}-1-full-recovery until the Cluster is healthy and the Job complete (a Failed Job, or a pod held by a volume of the old Cluster, stops it)",
            e.params.cluster
        )
    }
    fn run(&self, e: &Env<'a>, j: &Journal, stop: &AtomicBool) -> Result<Value, Error> {
        let old = e.old(j)?;
        let state = watch_recovery(e.d.ctx, &e.d.kube, old.uid.as_deref(), stop)?;
        Ok(value(state))
    }
}

/// A Backup that ended without a base backup: `failed`,
/// `walArchivingFailing` (cloudnative-pg api/v1/backup_types.go: the WAL
/// it needs is not being archived, so it cannot complete), or `invalid
/// backup definition` (v1.30.0, `BackupPhaseDefinitionInvalid`, #10874:
/// the webhook-free admission check refused it; CNPG leaves it so until
/// the definition changes, and nothing changes the one drgit made).
fn failed(b: &crate::cluster::BackupState) -> bool {
    matches!(
        b.phase.as_deref(),
        Some("failed" | "walArchivingFailing" | "invalid backup definition")
    )
}

struct TakeBackup;
impl TakeBackup {
    fn backup_name(e: &Env, j: &Journal) -> String {
        // Stable across a resume: from when the run started.
        let started: String = j
            .data
            .started_at
            .parse::<jiff::Timestamp>()
            .map(crate::timearg::compact)
            .unwrap_or_default()
            .to_lowercase();
        format!("{}-drgit-{started}", e.params.cluster)
    }
}
impl<'a> Step<Env<'a>> for TakeBackup {
    fn name(&self) -> &'static str {
        "backup"
    }
    fn describe(&self, e: &Env<'a>) -> String {
        format!(
            "Take an on-demand Backup of {} and wait until it completes and ContinuousArchiving is True: the new lineage `{}` is recoverable at once",
            e.params.cluster, e.params.new_lineage
        )
    }
    fn run(&self, e: &Env<'a>, j: &Journal, stop: &AtomicBool) -> Result<Value, Error> {
        let pg = &e.d.ctx.config.postgres;
        let ns = &e.params.namespace;
        // A Backup that failed in an earlier attempt stays as it was (CNPG
        // keeps it); a resume takes a new one beside it.
        let base = Self::backup_name(e, j);
        let mut name = base.clone();
        for attempt in 2.. {
            match e.d.kube.backup_state(ns, &name)? {
                Some(b) if failed(&b) => name = format!("{base}-{attempt}"),
                _ => break,
            }
        }
        let plugin = e.live()?.is_some_and(|s| s.plugin_backup);
        e.d.kube
            .create_backup(ns, &name, &e.params.cluster, plugin)?;
        let polled = plan::poll_until(
            self.name(),
            Duration::from_secs(pg.recovery_timeout_secs),
            (ms(pg.health_poll_ms), MAX_POLL),
            stop,
            |_| {
                let b = e.d.kube.backup_state(ns, &name)?;
                let archiving = e.live()?.and_then(|s| s.continuous_archiving);
                match b {
                    Some(b) if failed(&b) => Err(Error::BackupFailed {
                        namespace: ns.clone(),
                        name: name.clone(),
                        error: b
                            .error
                            .unwrap_or_else(|| b.phase.unwrap_or_else(|| "no reason given".into())),
                    }),
                    Some(b)
                        if b.phase.as_deref() == Some("completed") && archiving == Some(true) =>
                    {
                        Ok(Poll::Ready(b))
                    }
                    other => Ok(Poll::Waiting(format!(
                        "Backup {name}: {}; ContinuousArchiving {}",
                        other
                            .and_then(|b| b.phase)
                            .unwrap_or_else(|| "not started".into()),
                        match archiving {
                            Some(true) => "True",
                            Some(false) => "False",
                            None => "not reported yet",
                        }
                    ))),
                }
            },
        )?;
        match polled {
            Ok(b) => Ok(value(b)),
            Err(t) => Err(Error::Timeout {
                namespace: ns.clone(),
                name: name.clone(),
                waited: t.waited,
                last: t.last,
            }),
        }
    }
}

struct RevertPr;
impl<'a> Step<Env<'a>> for RevertPr {
    fn name(&self) -> &'static str {
        "revert-pr"
    }
    fn describe(&self, _: &Env<'a>) -> String {
        "Open the pull request that puts bootstrap back to initdb (auto-revert)".into()
    }
    fn run(&self, e: &Env<'a>, _: &Journal, _stop: &AtomicBool) -> Result<Value, Error> {
        // The revert starts from what was merged, not from the local branch.
        e.d.repo.switch_to_remote_branch(
            &e.d.ctx.config.git.remote,
            &e.d.tracked,
            &e.d.ctx.config.postgres.manifest,
        )?;
        let outcome = super::pg_revert::run(
            e.d.ctx,
            &super::pg_revert::Args {
                dry_run: false,
                publish: super::publish::Options {
                    mode: super::publish::Mode::PullRequest,
                    ..Default::default()
                },
                when_healthy: false,
            },
        )?;
        Ok(value(outcome.published))
    }
}

/// The journal's scenario name: `drgit resume` finds this plan by it.
pub const SCENARIO: &str = "pg-recover-wait";

/// Starts the wait after a published (or, with `--direct`, committed) recovery.
pub fn start(ctx: &Context, repo: &WorkRepo, params: Params, yes: bool) -> Result<Value, Error> {
    let journal = Journal::start(&repo.git_dir(), SCENARIO, value(&params))?;
    drive(ctx, journal, yes)
}

/// Goes on with a journaled wait (`drgit resume`).
pub fn resume(ctx: &Context, journal: Journal, yes: bool) -> Result<Value, Error> {
    drive(ctx, journal, yes)
}

fn drive(ctx: &Context, journal: Journal, yes: bool) -> Result<Value, Error> {
    let mut params: Params = journal.params_as()?;
    if params.manifest.as_os_str().is_empty() {
        params.manifest = ctx.config.postgres.manifest.clone();
    }
    let target = Target {
        manifest_dir: params.manifest_dir.clone(),
        files: vec![params.manifest.clone()],
        pr: params.pr,
        commit: params.commit.clone(),
        direct_branch: params.direct_branch.clone(),
        scenario: "pg-recover".into(),
        application: ctx.config.argocd.application.clone(),
    };
    let d = Delivery::connect(ctx, target, params.auto_revert)?;
    // A run that started keeps its steps: whether the revert follows was
    // decided when it started.
    let auto_revert = if journal.data.steps.is_empty() {
        params.auto_revert || AutoRevert::load(&d.repo).is_some_and(|i| i.cluster == params.cluster)
    } else {
        journal.data.steps.iter().any(|s| s.name == "revert-pr")
    };
    let confirmation = plan::Confirmation {
        yes,
        word: params.cluster.clone(),
        what: "the Cluster's name".into(),
    };
    let merge = Merge {
        direct: params.direct_branch.is_some(),
    };
    let env = Env { d, params };
    let mut steps: Vec<&dyn Step<Env>> = vec![
        &OldClusterStep,
        &Fence,
        &merge,
        &ArgoSynced,
        &Delete,
        &Recreate,
        &Recovered,
        &TakeBackup,
    ];
    if auto_revert {
        steps.push(&RevertPr);
    }
    plan::drive(&env, &steps, journal, &confirmation)
}

/// The uid of the Cluster a recovery run deleted (current or last run),
/// for `pg-revert --when-healthy`: the status of that Cluster says nothing
/// about the recovery.
pub fn deleted_uid(repo: &WorkRepo) -> Option<String> {
    let data = plan::last_journal(&repo.git_dir()).ok().flatten()?;
    data.steps
        .iter()
        .find(|s| s.name == "old-cluster")
        .and_then(|s| s.output["uid"].as_str().map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(uid: &str, phase: &str, healthy: bool) -> ClusterState {
        ClusterState {
            uid: Some(uid.into()),
            phase: Some(phase.into()),
            ready: healthy,
            ready_instances: if healthy { 2 } else { 0 },
            instances: 2,
            recovering_spec: true,
            ..ClusterState::default()
        }
    }

    fn job(complete: bool, failed: i32, for_good: bool) -> JobState {
        JobState {
            name: "pg-1-full-recovery".into(),
            complete,
            failed,
            failed_for_good: for_good,
            failed_message: for_good.then(|| "BackoffLimitExceeded".into()),
            ..JobState::default()
        }
    }

    #[test]
    fn the_old_clusters_frozen_status_is_not_a_recovery() {
        let mut old = cluster("old", "Cluster in healthy state", true);
        old.terminating = true;
        assert!(matches!(
            judge(Some(&old), None, Some("old")),
            Verdict::Waiting(_)
        ));
        old.terminating = false;
        assert!(matches!(
            judge(Some(&old), None, Some("old")),
            Verdict::Waiting(_)
        ));
        let new = cluster("new", "Cluster in healthy state", true);
        assert_eq!(judge(Some(&new), None, Some("old")), Verdict::Recovered);
    }

    #[test]
    fn the_job_decides_only_by_its_conditions() {
        let healthy = cluster("new", "Cluster in healthy state", true);
        let setting_up = cluster("new", "Setting up primary", false);
        // Failed pods are retried: not a failure.
        assert!(matches!(
            judge(Some(&setting_up), Some(&job(false, 3, false)), Some("old")),
            Verdict::Waiting(w) if w.contains("Kubernetes retries")
        ));
        assert!(matches!(
            judge(Some(&setting_up), Some(&job(false, 6, true)), Some("old")),
            Verdict::JobFailed(_)
        ));
        // Healthy, but the Job still runs: wait; complete (or cleaned up): done.
        assert!(matches!(
            judge(Some(&healthy), Some(&job(false, 0, false)), Some("old")),
            Verdict::Waiting(_)
        ));
        assert_eq!(
            judge(Some(&healthy), Some(&job(true, 1, false)), Some("old")),
            Verdict::Recovered
        );
    }

    #[test]
    fn cnpg_failures_and_initdb_are_named() {
        let u = cluster(
            "new",
            "Cluster is unrecoverable and needs manual intervention",
            false,
        );
        assert!(matches!(
            judge(Some(&u), None, None),
            Verdict::Unrecoverable(_)
        ));
        let mut i = cluster("new", "Cluster in healthy state", true);
        i.recovering_spec = false;
        assert_eq!(judge(Some(&i), None, None), Verdict::NotRecovery);
    }
}
