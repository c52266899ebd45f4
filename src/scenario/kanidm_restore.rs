//! `drgit kanidm-restore`: the runbook's Kanidm procedure when both pods
//! lost their data. One pod is restored from the backup (it gets the
//! backup's identity back); the other comes back empty and is re-certified
//! and refreshed from it.
//!
//! 1. Download and verify the backup (gzip, JSON, kanidmd's `version`);
//!    refuse a restore image of another kanidmd series.
//! 2. Scale the StatefulSet to 0 through Git (`spec.replicas`, a reviewed
//!    change; confirmed), wait for Argo CD and until the pods are gone.
//!    Never `kubectl scale`: Argo CD self-heal undoes it.
//! 3. Copy the backup onto the pod's volume through a short-lived pod
//!    (streamed over exec, uid/gid 1000), named `….gz` when it is gzip
//!    (kanidmd restore goes by the name), checked by SHA-256.
//! 4. Restore (confirmed) in a pod with the server image, the volume and
//!    the server ConfigMap at /config; judged from its log; both pods are
//!    deleted, also on failure.
//! 5. Replicas back through Git; wait until the StatefulSet is healthy.
//! 6. The other pod: its new certificate into the restored pod's
//!    `partner_cert` (automatic_refresh off), merged, synced, restarted, and
//!    (confirmed) refreshed from the restored pod.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::delivery::{
    Change, Delivers, Delivery, MAX_POLL, Stage, StagedMerge, StagedSync, Target, ms, value,
};
use super::kanidm_recert::{self, ReplManifest, RestartCheck, Rollout};
use super::publish::{self, Mode, Options};
use super::{Context, Detail, Outcome, sha256_file};
use crate::backup::download::{self, Kind};
use crate::backup::kinds;
use crate::cert::ReplCert;
use crate::error::Error;
use crate::gitops::WorkRepo;
use crate::manifest::{ManifestError, kanidm, statefulset, yaml};
use crate::plan::{self, Journal, Poll, Step};

const COMMIT_TEMPLATE: &str = include_str!("../../templates/kanidm-restore.commit.j2");
const PR_TEMPLATE: &str = include_str!("../../templates/kanidm-restore.pr.md.j2");

const DOWN: Stage = Stage {
    change: "scale-down",
    merged: "scale-down-merged",
    synced: "scale-down-synced",
};
const UP: Stage = Stage {
    change: "scale-up",
    merged: "scale-up-merged",
    synced: "scale-up-synced",
};
const RECERT: Stage = Stage {
    change: "recert",
    merged: "recert-merged",
    synced: "recert-synced",
};

/// The short-lived pods, by name.
const COPY_POD: &str = "drgit-kanidm-copy";
const RESTORE_POD: &str = "drgit-kanidm-restore";

#[derive(Debug, Clone)]
pub struct Args {
    /// A backup's file name, or `latest`.
    pub backup: String,
    /// The pod to restore into.
    pub pod: String,
    /// The restore image; default: the StatefulSet's.
    pub image: Option<String>,
    pub dry_run: bool,
    pub publish: Options,
    pub yes: bool,
    /// Shows the plan before anything happens (the CLI prints it).
    pub show_plan: Option<fn(&Outcome)>,
}

/// The verified backup, as the plan uses it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupFile {
    pub key: String,
    /// The verified local copy.
    pub local: PathBuf,
    pub size: u64,
    pub sha256: String,
    /// The kanidmd series that wrote it ("1.9").
    pub version: String,
    pub gzip: bool,
    /// `db_ts_max`: its newest change.
    pub db_ts_max: Option<String>,
    /// Its name on the volume (`.gz` for gzip: kanidmd restore goes by it).
    pub restore_name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct KanidmRestoreDetail {
    pub statefulset: String,
    pub pod: String,
    /// The pods that come back empty and are re-certified.
    pub others: Vec<String>,
    pub replicas: i64,
    pub backup: BackupFile,
    pub image: String,
    /// What is left where once the run ended.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left: Vec<String>,
}

/// What the plan needs to know; kept in the journal for `drgit resume`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Params {
    pub pod: String,
    pub others: Vec<String>,
    pub replicas: i64,
    pub backup: BackupFile,
    pub image: String,
    /// Changes go by pull request (else pushed on the tracked branch).
    pub pull_requests: bool,
    /// `--push --direct` (false in a dry run without publishing flags).
    #[serde(default)]
    pub direct: bool,
    pub target: Target,
}

/// `data-<pod>`: the volume the StatefulSet's claim template `data` gives
/// the pod.
fn volume_of(pod: &str) -> String {
    format!("data-{pod}")
}

/// Step 1: the backup, downloaded into `dir` and verified.
pub fn fetch_backup(ctx: &Context, name: &str, dir: &Path) -> Result<BackupFile, Error> {
    let k = &ctx.config.kanidm;
    let store = ctx.open_store()?;
    let item = kinds::find(store.as_ref(), Kind::Kanidm, &k.backup_prefix, name)?;
    let file = item.key.rsplit('/').next().unwrap_or("backup").to_string();
    crate::private::create_dir_all(dir).map_err(|source| Error::ReadFile {
        file: dir.display().to_string(),
        source,
    })?;
    let local = dir.join(&file);
    let done = download::download_item(
        store.as_ref(),
        &item,
        &local,
        Kind::Kanidm,
        &download::Options::default(),
    )?;
    // Verified while downloading; read again for what the plan needs.
    let (version, gzip) = crate::backup::verify::kanidm_backup(&local).map_err(|e| {
        Error::Download(download::DownloadError::Corrupt {
            key: item.key.clone(),
            check: "kanidm backup",
            source: e,
        })
    })?;
    Ok(BackupFile {
        restore_name: kinds::restore_file_name(&item.key, gzip),
        key: item.key,
        sha256: sha256_file(&local)?,
        local,
        size: done.size,
        version,
        gzip,
        db_ts_max: item.db_ts_max.map(|t| t.to_string()),
    })
}

pub fn run(ctx: &Context, args: &Args) -> Result<Outcome, Error> {
    let k = &ctx.config.kanidm;
    let mode = args.publish.mode;
    if !args.dry_run && !matches!(mode, Mode::PullRequest | Mode::Direct) {
        return Err(Error::WaitNeedsPublish);
    }
    let repo = if args.dry_run {
        None
    } else {
        let repo = WorkRepo::open(&ctx.repo_dir)?;
        plan::Journal::refuse_if_running(&repo.git_dir())?;
        repo.check_file_clean(&k.statefulset_manifest)?;
        repo.check_file_clean(&k.repl_configmap)?;
        Some(repo)
    };

    // The StatefulSet as Git has it: its replicas and image.
    let sts_file = k.statefulset_manifest.display().to_string();
    let sts_text =
        std::fs::read_to_string(ctx.repo_dir.join(&k.statefulset_manifest)).map_err(|source| {
            Error::ReadManifest {
                file: sts_file.clone(),
                setting: "[kanidm] statefulset_manifest",
                source,
            }
        })?;
    let sts_err = |source| Error::Manifest {
        file: sts_file.clone(),
        source,
    };
    let stream = yaml::parse(&sts_text).map_err(sts_err)?;
    let found = statefulset::find(&stream, &k.statefulset).map_err(sts_err)?;
    if found.replicas < 1 {
        return Err(sts_err(ManifestError::Shape {
            path: "spec.replicas".into(),
            expected: "the count to come back to (it is 0: a restore already scaled it down? then `drgit resume`)".into(),
        }));
    }

    // Which pods come back empty: every other one.
    let repl = ReplManifest::read(ctx)?;
    if kanidm::origin_of(&repl.stream, &args.pod).is_none() {
        return Err(repl.error(ManifestError::NoOrigin {
            pod: args.pod.clone(),
        }));
    }
    let others: Vec<String> = (0..found.replicas)
        .map(|i| format!("{}-{i}", k.statefulset))
        .filter(|p| *p != args.pod)
        .collect();

    // Step 1: the backup, verified, before anything else.
    let (dir, _scratch) = super::work_dir(repo.as_ref(), "kanidm-restore")?;
    let backup = fetch_backup(ctx, &args.backup, &dir)?;
    let image = args
        .image
        .clone()
        .or_else(|| found.images.first().cloned())
        .unwrap_or_else(|| k.image.clone());
    // An image pinned by digest alone has no version to read: taken on the
    // user's word when given with --image (kanidmd still refuses another
    // series itself, DB0001MismatchedRestoreVersion).
    let name = image.split('@').next().unwrap_or_default();
    let digest_only =
        image.contains('@') && !name.rsplit('/').next().unwrap_or_default().contains(':');
    match kinds::restore_image_matches(&backup.version, &image) {
        Ok(()) => {}
        Err(why) if digest_only && args.image.is_some() => {
            tracing::warn!(%why, "restoring with the image --image gives");
        }
        Err(why) => {
            return Err(Error::RestoreImage {
                backup: backup.key.clone(),
                why,
            });
        }
    }

    // The first change, shown as the diff.
    let down = statefulset::set_replicas(&sts_text, stream, &k.statefulset, 0).map_err(sts_err)?;
    let diff = super::unified_diff(&sts_file, &sts_text, &down.text);
    let manifest_dir = k
        .statefulset_manifest
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let params = Params {
        pod: args.pod.clone(),
        others: others.clone(),
        replicas: found.replicas,
        backup: backup.clone(),
        image: image.clone(),
        pull_requests: mode == Mode::PullRequest,
        direct: mode == Mode::Direct,
        target: Target {
            manifest_dir,
            files: vec![k.statefulset_manifest.clone()],
            pr: None,
            commit: None,
            direct_branch: None,
            scenario: "kanidm-restore".into(),
            application: k.application.clone(),
        },
    };
    let plan_lines: Vec<String> = STEPS
        .iter()
        .map(|name| describe(name, ctx, &params))
        .collect();
    let mut outcome = Outcome {
        scenario: "kanidm-restore",
        manifest: sts_file.clone(),
        dry_run: args.dry_run,
        changes: down.changes.clone(),
        diff,
        plan: plan_lines,
        branch: None,
        commit: None,
        published: None,
        wait: None,
        detail: Detail::KanidmRestore(KanidmRestoreDetail {
            statefulset: k.statefulset.clone(),
            pod: args.pod.clone(),
            others,
            replicas: found.replicas,
            backup,
            image,
            left: Vec::new(),
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
    // Done: the local copy is no longer needed for a resume.
    if let Detail::KanidmRestore(d) = &mut outcome.detail {
        let local = &d.backup.local;
        d.left.push(match std::fs::remove_file(local) {
            Ok(()) => format!("the downloaded copy {} is deleted", local.display()),
            Err(e) => format!(
                "the downloaded copy {} could not be deleted ({e}): it holds every credential of the server, delete it",
                local.display()
            ),
        });
    }
    Ok(outcome)
}

/// The plan's steps, in order.
const STEPS: &[&str] = &[
    "scale-down",
    "scale-down-merged",
    "scale-down-synced",
    "pods-gone",
    "copy",
    "restore",
    "scale-up",
    "scale-up-merged",
    "scale-up-synced",
    "healthy",
    "recert",
    "recert-merged",
    "recert-synced",
    "restarted",
    "refresh-consumer",
];

/// What each step does, for the plan (dry run) and the prompts.
fn describe(step: &str, ctx: &Context, p: &Params) -> String {
    let k = &ctx.config.kanidm;
    let (ns, sts) = (&k.namespace, &k.statefulset);
    let how = match (p.pull_requests, p.direct) {
        (true, _) => "open its pull request",
        (false, true) => "push it on the branch Argo CD tracks",
        // A dry run without publishing flags: the run needs one.
        (false, false) => {
            "open its pull request (--pr) or push it on the branch Argo CD tracks (--push --direct)"
        }
    };
    let others = p.others.join(", ");
    match step {
        "scale-down" => format!(
            "Commit `spec.replicas: 0` for StatefulSet {ns}/{sts} in {} and {how}: Kanidm stops serving",
            k.statefulset_manifest.display()
        ),
        "scale-down-merged" | "scale-up-merged" | "recert-merged" => {
            "Wait until that change is on the branch Argo CD tracks (its pull request merged)"
                .into()
        }
        "scale-down-synced" | "scale-up-synced" | "recert-synced" => format!(
            "Wait until the Argo CD Application deploying {} is Synced at a revision holding that change",
            p.target.manifest_dir
        ),
        "pods-gone" => format!("Wait until every pod of StatefulSet {ns}/{sts} is gone"),
        "copy" => format!(
            "Copy {} ({} bytes, SHA-256 {}…) onto volume {} as /data/{} through pod {COPY_POD} (uid/gid 1000, streamed over exec), check its SHA-256, delete the pod",
            p.backup.key,
            p.backup.size,
            &p.backup.sha256[..12.min(p.backup.sha256.len())],
            volume_of(&p.pod),
            p.backup.restore_name
        ),
        "restore" => format!(
            "Replace the database on volume {} with the backup: pod {RESTORE_POD} ({}, ConfigMap {} at /config) runs `kanidmd database restore -c {} /data/{}`, judged from its log; the pod is deleted, also on failure",
            volume_of(&p.pod),
            p.image,
            k.server_configmap,
            k.server_config_path,
            p.backup.restore_name
        ),
        "scale-up" => format!(
            "Commit `spec.replicas: {}` for StatefulSet {ns}/{sts} and {how}",
            p.replicas
        ),
        "healthy" => format!(
            "Wait until StatefulSet {ns}/{sts} has {} Ready pods: {} serves the restored data, {others} come(s) back empty with a new identity; then delete /data/{} from volume {}",
            p.replicas,
            p.pod,
            p.backup.restore_name,
            volume_of(&p.pod)
        ),
        "recert" => format!(
            "Read the new certificate of {others} (`kanidmd show-replication-certificate`), put it as `partner_cert` in {}'s settings in {} with its automatic_refresh off, commit and {how}",
            p.pod,
            k.repl_configmap.display()
        ),
        "restarted" => format!(
            "Wait until the ConfigMap holds the new certificate(s) and StatefulSet {ns}/{sts} has restarted with it (Reloader)"
        ),
        "refresh-consumer" => format!(
            "Replace the empty database of {others} with {}'s: `kanidmd refresh-replication-consumer -c {} --i-want-to-refresh-this-servers-database`, judged from its output",
            p.pod, k.server_config_path
        ),
        other => other.to_string(),
    }
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

/// What the commit and pull-request templates see.
#[derive(Serialize)]
struct Texts<'a> {
    stage: &'a str,
    statefulset: &'a str,
    namespace: &'a str,
    pod: &'a str,
    others: &'a [String],
    backup: &'a BackupFile,
    file: &'a str,
    changes: &'a [String],
    certificates: &'a [ReplCert],
    diffstat: &'a str,
}

impl Env<'_> {
    /// Commits one stage's change of `file` (from the tracked branch as the
    /// remote has it now) and publishes it. A change already there (a
    /// resumed run) is the tracked branch's tip.
    fn commit_stage(
        &self,
        stage: &str,
        file: &Path,
        edit: impl FnOnce(&str, yaml::Stream) -> Result<crate::manifest::cnpg::Rewrite, ManifestError>,
        certificates: &[ReplCert],
    ) -> Result<Change, Error> {
        let ctx = self.d.ctx;
        let repo = &self.d.repo;
        let remote = &ctx.config.git.remote;
        repo.switch_to_remote_branch(remote, &self.d.tracked, file)?;
        let display = file.display().to_string();
        let text = std::fs::read_to_string(ctx.repo_dir.join(file)).map_err(|source| {
            Error::ReadManifest {
                file: display.clone(),
                setting: "[kanidm]",
                source,
            }
        })?;
        let err = |source| Error::Manifest {
            file: display.clone(),
            source,
        };
        let rewrite = match edit(&text, yaml::parse(&text).map_err(err)?) {
            Ok(r) => r,
            Err(ManifestError::NothingToChange { .. }) => {
                let tip = repo.branch_commit(&self.d.tracked).ok_or_else(|| {
                    Error::NotDone {
                        step: stage.into(),
                        detail: format!(
                            "the change is already on `{}`, but that branch cannot be read locally; fetch it, then `drgit resume`",
                            self.d.tracked
                        ),
                    }
                })?;
                return Ok(Change {
                    commit: tip.to_string(),
                    pr: None,
                    files: vec![file.to_path_buf()],
                });
            }
            Err(e) => return Err(err(e)),
        };
        let label: &'static str = match stage {
            "scale-down" => "kanidm-scale-down",
            "scale-up" => "kanidm-scale-up",
            _ => "kanidm-recert",
        };
        let change = publish::ChangeSet {
            files: vec![publish::FileChange {
                path: file.to_path_buf(),
                old: text.clone(),
                new: rewrite.text.clone(),
            }],
            changes: rewrite.changes.clone(),
            label,
            branch_key: ctx.config.kanidm.statefulset.clone(),
        };
        let mode = if self.params.pull_requests {
            Mode::PullRequest
        } else {
            Mode::Direct
        };
        let branch = publish::branch_for(ctx, label, &change.branch_key, mode, Some(repo))?;
        publish::preflight(ctx, repo, mode, &branch)?;
        let k = &ctx.config.kanidm;
        let stat = change.diffstat();
        let texts = Texts {
            stage,
            statefulset: &k.statefulset,
            namespace: &k.namespace,
            pod: &self.params.pod,
            others: &self.params.others,
            backup: &self.params.backup,
            file: &display,
            changes: &rewrite.changes,
            certificates,
            diffstat: &stat,
        };
        let (message, title, body) =
            publish::render_texts(ctx, "kanidm-restore", COMMIT_TEMPLATE, PR_TEMPLATE, &texts)?;
        let opts = Options {
            mode,
            ..Options::default()
        };
        let (committed, published, _) = publish::commit_and_publish(
            ctx,
            repo,
            &opts,
            &branch,
            &change,
            (&message, &title, &body),
        )?;
        Ok(Change {
            commit: committed.commit.to_string(),
            pr: published.pull_request.map(|p| p.number),
            files: vec![file.to_path_buf()],
        })
    }

    /// Before Kanidm is stopped: no pod still has the replication identity
    /// Git knows for it (its certificate is the partner_cert the others
    /// hold). Such a pod did not lose its data: restoring over it would
    /// throw away everything newer than the backup. A pod that does not
    /// answer has nothing to compare.
    fn identities_lost(&self) -> Result<(), Error> {
        let ctx = self.d.ctx;
        let repl = ReplManifest::read(ctx)?;
        let norm = |c: &str| c.trim_end_matches('=').to_string();
        let mut pods = vec![self.params.pod.clone()];
        pods.extend(self.params.others.iter().cloned());
        for pod in pods {
            let Some(origin) = kanidm::origin_of(&repl.stream, &pod) else {
                continue;
            };
            let known: Vec<String> = kanidm::partner_certs_for(&repl.stream, &origin)
                .iter()
                .map(|c| norm(c))
                .collect();
            match kanidm_recert::pod_certificate_value(ctx, &self.d.kube, &pod) {
                Ok(live) if known.contains(&norm(&live)) => {
                    return Err(Error::NotDone {
                        step: "scale-down".into(),
                        detail: format!(
                            "pod {}/{pod} still has the replication identity Git knows for it (its certificate is the partner_cert for {origin} in {}): it has not lost its data, and a restore would throw away everything newer than the backup. If only the other pod lost its data, use `drgit kanidm-recert --pod <that pod>`",
                            ctx.config.kanidm.namespace,
                            repl.rel_path.display()
                        ),
                    });
                }
                Ok(_) => {}
                Err(e) => tracing::info!(%e, pod, "no certificate to compare"),
            }
        }
        Ok(())
    }

    /// The StatefulSet (read once) and its pods, by its selector (or
    /// `app=<name>` when it is gone).
    fn statefulset_and_pods(
        &self,
    ) -> Result<
        (
            Option<crate::cluster::workload::StatefulSetState>,
            Vec<crate::cluster::workload::PodInfo>,
        ),
        Error,
    > {
        let k = &self.d.ctx.config.kanidm;
        let sts = self.d.kube.statefulset(&k.namespace, &k.statefulset)?;
        let selector = sts
            .as_ref()
            .map(|s| s.selector.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("app={}", k.statefulset));
        let pods = self.d.kube.pods(&k.namespace, &selector)?;
        Ok((sts, pods))
    }

    /// None while the StatefulSet is at 0 with no pod left; else what runs.
    fn still_running(&self) -> Result<Option<String>, Error> {
        let k = &self.d.ctx.config.kanidm;
        let (sts, pods) = self.statefulset_and_pods()?;
        Ok(match sts {
            Some(s) if s.replicas > 0 => Some(format!(
                "StatefulSet {}/{} still wants {} replica(s)",
                k.namespace, k.statefulset, s.replicas
            )),
            _ if !pods.is_empty() => Some(format!(
                "pod(s) still there: {}",
                pods.iter()
                    .map(|p| p.name.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => None,
        })
    }

    /// Creates a short-lived pod with the pod's volume at /data (and more),
    /// as uid/gid 1000 like the StatefulSet's.
    fn create_pod(
        &self,
        name: &str,
        image: &str,
        command: &[&str],
        restart: &str,
        config: bool,
    ) -> Result<(), Error> {
        let k = &self.d.ctx.config.kanidm;
        let mut mounts = vec![serde_json::json!({"name": "data", "mountPath": "/data"})];
        let mut volumes = vec![
            serde_json::json!({"name": "data", "persistentVolumeClaim": {"claimName": volume_of(&self.params.pod)}}),
        ];
        if config {
            mounts.push(
                serde_json::json!({"name": "config", "mountPath": "/config", "readOnly": true}),
            );
            volumes.push(
                serde_json::json!({"name": "config", "configMap": {"name": k.server_configmap}}),
            );
        }
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": k.namespace, "labels": {"app.kubernetes.io/managed-by": "drgit"}},
            "spec": {
                "restartPolicy": restart,
                "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000},
                "containers": [{"name": "main", "image": image, "command": command, "volumeMounts": mounts}],
                "volumes": volumes
            }
        }))
        .map_err(|e| Error::NotDone {
            step: name.into(),
            detail: format!("cannot build the pod spec: {e}"),
        })?;
        // A pod left by an interrupted run goes first.
        self.d.kube.delete_pod(&k.namespace, name)?;
        self.wait_pod(name, "gone", &AtomicBool::new(false), |p| p.is_none())?;
        self.d.kube.create_pod(&k.namespace, &pod)?;
        Ok(())
    }

    /// Polls a pod until `done` says so; times out per `[kanidm]
    /// restore_timeout_secs`. Returns its last phase.
    fn wait_pod(
        &self,
        name: &str,
        what: &str,
        stop: &AtomicBool,
        done: impl Fn(Option<&crate::cluster::workload::PodState>) -> bool,
    ) -> Result<Option<String>, Error> {
        let k = &self.d.ctx.config.kanidm;
        let polled = plan::poll_until(
            name,
            Duration::from_secs(k.restore_timeout_secs),
            (ms(self.d.ctx.config.argocd.poll_ms), MAX_POLL),
            stop,
            |_| {
                let pod = self.d.kube.pod(&k.namespace, name)?;
                let phase = pod.as_ref().map(|p| p.phase.clone());
                Ok(if done(pod.as_ref()) {
                    Poll::Ready(phase)
                } else {
                    Poll::Waiting(format!(
                        "pod {}/{name}: {} (waiting until {what})",
                        k.namespace,
                        phase.as_deref().unwrap_or("not there")
                    ))
                })
            },
        )?;
        polled.map_err(|t| Error::NotDone {
            step: name.into(),
            detail: format!(
                "{} after {:?}; the pod is deleted. Check why it did not start (`kubectl describe pod {name} -n {}`: image, volume {} still attached?), then `drgit resume`",
                t.last,
                t.waited,
                k.namespace,
                volume_of(&self.params.pod)
            ),
        })
    }

    /// Deletes a short-lived pod, logging (not failing) when it cannot.
    fn cleanup(&self, name: &str) {
        let ns = &self.d.ctx.config.kanidm.namespace;
        if let Err(e) = self.d.kube.delete_pod(ns, name) {
            tracing::warn!(%e, pod = name, "cannot delete the pod; delete it by hand");
        }
    }
}

/// A stage's change: the replica count.
struct Scale {
    stage: Stage,
    down: bool,
}
impl<'a> Step<Env<'a>> for Scale {
    fn name(&self) -> &'static str {
        self.stage.change
    }
    fn describe(&self, e: &Env<'a>) -> String {
        describe(self.stage.change, e.d.ctx, &e.params)
    }
    fn destructive(&self) -> bool {
        self.down
    }
    fn check(&self, e: &Env<'a>, j: &Journal) -> Result<(), Error> {
        if !self.down || j.output_as::<Change>(DOWN.change).is_ok() {
            return Ok(());
        }
        e.identities_lost()
    }
    fn run(&self, e: &Env<'a>, _: &Journal, _: &AtomicBool) -> Result<Value, Error> {
        let k = &e.d.ctx.config.kanidm;
        let n = if self.down { 0 } else { e.params.replicas };
        let change = e.commit_stage(
            self.stage.change,
            &k.statefulset_manifest,
            |text, stream| statefulset::set_replicas(text, stream, &k.statefulset, n),
            &[],
        )?;
        Ok(value(change))
    }
}

struct PodsGone;
impl<'a> Step<Env<'a>> for PodsGone {
    fn name(&self) -> &'static str {
        "pods-gone"
    }
    fn describe(&self, e: &Env<'a>) -> String {
        describe(self.name(), e.d.ctx, &e.params)
    }
    fn run(&self, e: &Env<'a>, _: &Journal, stop: &AtomicBool) -> Result<Value, Error> {
        let k = &e.d.ctx.config.kanidm;
        let polled = plan::poll_until(
            self.name(),
            Duration::from_secs(k.rollout_timeout_secs),
            (ms(e.d.ctx.config.argocd.poll_ms), MAX_POLL),
            stop,
            |_| {
                Ok(match e.still_running()? {
                    None => Poll::Ready(()),
                    Some(what) => Poll::Waiting(what),
                })
            },
        )?;
        polled.map_err(|t| Error::NotDone {
            step: self.name().into(),
            detail: format!(
                "{} after {:?}; check the StatefulSet and its pods' finalizers, then `drgit resume`",
                t.last, t.waited
            ),
        })?;
        Ok(value(serde_json::json!({"gone": true})))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Copied {
    path: String,
    sha256: String,
}

struct Copy;
impl Copy {
    fn copy(&self, e: &Env, stop: &AtomicBool) -> Result<Copied, Error> {
        let k = &e.d.ctx.config.kanidm;
        let b = &e.params.backup;
        e.create_pod(
            COPY_POD,
            &k.helper_image,
            &["sleep", "3600"],
            "Never",
            false,
        )?;
        e.wait_pod(COPY_POD, "Running", stop, |p| {
            p.is_some_and(|p| p.phase == "Running")
        })?;
        let dest = format!("/data/{}", b.restore_name);
        let part = format!("{dest}.part");
        // `head -c` stops after the size: the v4 exec protocol cannot
        // close standard input.
        let script = format!(
            "head -c {} > '{part}' && mv '{part}' '{dest}' && sha256sum '{dest}'",
            b.size
        );
        let mut file = std::fs::File::open(&b.local).map_err(|source| Error::ReadFile {
            file: b.local.display().to_string(),
            source,
        })?;
        let out = e.d.kube.exec_with_input(
            &k.namespace,
            COPY_POD,
            None,
            &["sh", "-c", &script],
            &mut file,
        )?;
        let written = out.stdout.split_whitespace().next().unwrap_or_default();
        if written != b.sha256 {
            return Err(Error::PodCommand {
                what: "the copy of the backup".into(),
                namespace: k.namespace.clone(),
                pod: COPY_POD.into(),
                reason: format!(
                    "the file on the volume has SHA-256 {}, not {} as downloaded; nothing was restored. `drgit resume` copies it again",
                    if written.is_empty() {
                        "(none)"
                    } else {
                        written
                    },
                    b.sha256
                ),
                output: kanidm_recert::tail(&format!("{}{}", out.stdout, out.stderr), 10),
            });
        }
        Ok(Copied {
            path: dest,
            sha256: b.sha256.clone(),
        })
    }
}
impl<'a> Step<Env<'a>> for Copy {
    fn name(&self) -> &'static str {
        "copy"
    }
    fn describe(&self, e: &Env<'a>) -> String {
        describe(self.name(), e.d.ctx, &e.params)
    }
    fn check(&self, e: &Env<'a>, _: &Journal) -> Result<(), Error> {
        refuse_if_running(e)
    }
    fn run(&self, e: &Env<'a>, _: &Journal, stop: &AtomicBool) -> Result<Value, Error> {
        let result = self.copy(e, stop);
        e.cleanup(COPY_POD);
        Ok(value(result?))
    }
}

/// The volume is used by nothing else: kanidmd takes an exclusive lock.
fn refuse_if_running(e: &Env) -> Result<(), Error> {
    match e.still_running()? {
        None => Ok(()),
        Some(what) => Err(Error::NotDone {
            step: "pods-gone".into(),
            detail: format!(
                "{what}: Kanidm must be stopped before its volume is written (check that the scale-down is synced), then `drgit resume`"
            ),
        }),
    }
}

/// What kanidmd's `database restore` logged (server/core/src/lib.rs,
/// `restore_server_core`): `✅ Restore Success!` at the end; failures log
/// an error and some still exit 0, so the log decides.
pub fn judge_restore(log: &str) -> Result<(), String> {
    const FAILURES: &[&str] = &[
        "Failed to restore database",
        "unable to be restored",
        "Refusing to start",
        "File::open error",
        "MismatchedRestoreVersion",
    ];
    if let Some(f) = FAILURES.iter().find(|f| log.contains(*f)) {
        return Err(format!("kanidmd logged \"{f}\""));
    }
    if log.contains("Restore Success") {
        Ok(())
    } else {
        Err("kanidmd did not log `Restore Success`".into())
    }
}

struct Restore;
impl Restore {
    /// Runs (or, after an interruption, goes on watching) the restore pod;
    /// its last phase, and the log judged.
    fn restore(&self, e: &Env, stop: &AtomicBool) -> Result<(), Error> {
        let k = &e.d.ctx.config.kanidm;
        let file = format!("/data/{}", e.params.backup.restore_name);
        // A restore pod left running by an interrupted run is watched, not
        // replaced: deleting it mid-write would leave a half-written database.
        let existing = e.d.kube.pod(&k.namespace, RESTORE_POD)?;
        if existing.is_none_or(|p| p.phase == "Pending") {
            e.create_pod(
                RESTORE_POD,
                &e.params.image,
                &[
                    "kanidmd",
                    "database",
                    "restore",
                    "-c",
                    &k.server_config_path,
                    &file,
                ],
                "Never",
                true,
            )?;
        }
        let left = format!(
            "the backup stays at {file} on volume {}, and StatefulSet {} stays at 0 replicas in Git",
            volume_of(&e.params.pod),
            k.statefulset
        );
        e.wait_pod(RESTORE_POD, "it starts", stop, |p| {
            p.is_some_and(|p| p.phase != "Pending")
        })
        .map_err(|err| match err {
            Error::NotDone { step, detail } => Error::NotDone {
                step,
                detail: format!("it did not start: {detail}; {left}"),
            },
            other => other,
        })?;
        let run_limit = Duration::from_secs(k.restore_run_timeout_secs);
        let polled = plan::poll_until(
            "restore",
            run_limit,
            (ms(e.d.ctx.config.argocd.poll_ms), MAX_POLL),
            stop,
            |_| {
                let pod = e.d.kube.pod(&k.namespace, RESTORE_POD)?;
                Ok(match pod.map(|p| p.phase) {
                    Some(p) if p == "Succeeded" || p == "Failed" => Poll::Ready(p),
                    Some(p) => Poll::Waiting(format!("pod {}/{RESTORE_POD}: {p}", k.namespace)),
                    None => Poll::Ready("gone".to_string()),
                })
            },
        )?;
        let phase = polled.map_err(|t| Error::NotDone {
            step: "restore".into(),
            detail: format!(
                "kanidmd still restores after {:?} ({}); the pod is left running (deleting it mid-write would leave a half-written database). `drgit resume` watches it again; {left}",
                t.waited, t.last
            ),
        })?;
        let log = e
            .d
            .kube
            .pod_log(&k.namespace, RESTORE_POD, None, Some(200))
            .map_err(|err| Error::PodCommand {
                what: "`kanidmd database restore`".into(),
                namespace: k.namespace.clone(),
                pod: RESTORE_POD.into(),
                reason: format!("its log cannot be read ({err}), so its outcome is unknown (pod {phase}); {left}. Read the log by hand, then `drgit resume` restores again"),
                output: String::new(),
            })?;
        judge_restore(&log).map_err(|reason| Error::PodCommand {
            what: "`kanidmd database restore`".into(),
            namespace: k.namespace.clone(),
            pod: RESTORE_POD.into(),
            reason: format!(
                "{reason} (pod {phase}). The pod is deleted; {left}. Fix the cause, then `drgit resume` restores again"
            ),
            output: kanidm_recert::tail(&log, 15),
        })
    }
}
impl<'a> Step<Env<'a>> for Restore {
    fn name(&self) -> &'static str {
        "restore"
    }
    fn describe(&self, e: &Env<'a>) -> String {
        describe(self.name(), e.d.ctx, &e.params)
    }
    fn destructive(&self) -> bool {
        true
    }
    fn check(&self, e: &Env<'a>, _: &Journal) -> Result<(), Error> {
        refuse_if_running(e)
    }
    fn run(&self, e: &Env<'a>, _: &Journal, stop: &AtomicBool) -> Result<Value, Error> {
        let result = self.restore(e, stop);
        // A pod still running stays (interrupted, or too slow); any other
        // is deleted, also on failure.
        let ns = &e.d.ctx.config.kanidm.namespace;
        let running =
            e.d.kube
                .pod(ns, RESTORE_POD)
                .ok()
                .flatten()
                .is_some_and(|p| p.phase == "Running");
        if !running {
            e.cleanup(RESTORE_POD);
        }
        result?;
        Ok(value(serde_json::json!({"restored": e.params.backup.key})))
    }
}

struct Healthy;
impl<'a> Step<Env<'a>> for Healthy {
    fn name(&self) -> &'static str {
        "healthy"
    }
    fn describe(&self, e: &Env<'a>) -> String {
        describe(self.name(), e.d.ctx, &e.params)
    }
    fn run(&self, e: &Env<'a>, _: &Journal, stop: &AtomicBool) -> Result<Value, Error> {
        let k = &e.d.ctx.config.kanidm;
        let want = e.params.replicas as i32;
        let polled = plan::poll_until(
            self.name(),
            Duration::from_secs(k.rollout_timeout_secs),
            (ms(e.d.ctx.config.argocd.poll_ms), MAX_POLL),
            stop,
            |_| {
                let (sts, pods) = e.statefulset_and_pods()?;
                let ready = pods.iter().filter(|p| p.ready && !p.deleting).count() as i32;
                Ok(match sts {
                    Some(s) if s.replicas == want && s.rolled_out() && ready == want => {
                        Poll::Ready(())
                    }
                    Some(s) => Poll::Waiting(format!(
                        "StatefulSet {}/{}: {} of {} pods Ready (spec {})",
                        k.namespace, k.statefulset, ready, want, s.replicas
                    )),
                    None => Poll::Waiting("no StatefulSet".into()),
                })
            },
        )?;
        polled.map_err(|t| Error::NotDone {
            step: self.name().into(),
            detail: format!(
                "{} after {:?}; check the pods' logs (`kubectl logs -n {} {}`), then `drgit resume`",
                t.last, t.waited, k.namespace, e.params.pod
            ),
        })?;
        // The copy on the volume holds every credential of the server:
        // restored, it goes.
        let file = format!("/data/{}", e.params.backup.restore_name);
        let removed =
            e.d.kube
                .exec(&k.namespace, &e.params.pod, None, &["rm", "-f", &file])
                .map(|o| o.success)
                .unwrap_or(false);
        let note = if removed {
            format!("{file} deleted from volume {}", volume_of(&e.params.pod))
        } else {
            tracing::warn!(file, pod = %e.params.pod, "cannot delete the backup copy from the volume");
            format!(
                "{file} is still on volume {}: it holds every credential of the server, delete it (`kubectl exec -n {} {} -- rm {file}`)",
                volume_of(&e.params.pod),
                k.namespace,
                e.params.pod
            )
        };
        Ok(value(
            serde_json::json!({"ready": want, "backup_copy": note}),
        ))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Recerted {
    #[serde(flatten)]
    change: Change,
    check: RestartCheck,
    certificates: Vec<ReplCert>,
}

struct Recert;
impl<'a> Step<Env<'a>> for Recert {
    fn name(&self) -> &'static str {
        RECERT.change
    }
    fn describe(&self, e: &Env<'a>) -> String {
        describe(self.name(), e.d.ctx, &e.params)
    }
    fn run(&self, e: &Env<'a>, j: &Journal, _: &AtomicBool) -> Result<Value, Error> {
        let ctx = e.d.ctx;
        let k = &ctx.config.kanidm;
        let repl = ReplManifest::read(ctx)?;
        let origin = |pod: &String| {
            kanidm::origin_of(&repl.stream, pod)
                .ok_or_else(|| repl.error(ManifestError::NoOrigin { pod: pod.clone() }))
        };
        // The empty pods' new certificates (their partners stop refreshing
        // from them), and the restored pod's: it has the identity of the
        // server that wrote the backup, which the others must trust
        // (unchanged when the backup is its own).
        let mut certs = Vec::new();
        let mut lost = Vec::new();
        for other in &e.params.others {
            let (cert, _) = kanidm_recert::pod_certificate(ctx, &e.d.kube, other)?;
            lost.push((origin(other)?, cert.value.clone()));
            certs.push(cert);
        }
        let (restored, _) = kanidm_recert::pod_certificate(ctx, &e.d.kube, &e.params.pod)?;
        let restored_entry = (origin(&e.params.pod)?, restored.value.clone());
        // Noted before the change is published; a change already made by
        // an interrupted attempt is told by the pods' start times only.
        let mut before = Rollout::note(ctx)?;
        let mut made = false;
        let change = e.commit_stage(
            RECERT.change,
            &k.repl_configmap,
            |text, stream| {
                let mut text = text.to_string();
                let mut stream = stream;
                let mut changes = Vec::new();
                let edits = lost
                    .iter()
                    .map(|p| (p, true))
                    .chain(std::iter::once((&restored_entry, false)));
                for ((origin, cert), refresh_off) in edits {
                    let edited = if refresh_off {
                        kanidm::set_partner_cert(&text, stream, origin, cert)
                    } else {
                        kanidm::set_partner_cert_keeping_refresh(&text, stream, origin, cert)
                    };
                    match edited {
                        Ok(r) => {
                            changes.extend(r.changes);
                            text = r.text;
                        }
                        Err(ManifestError::NothingToChange { .. }) => {}
                        Err(e) => return Err(e),
                    }
                    stream = yaml::parse(&text)?;
                }
                if changes.is_empty() {
                    return Err(ManifestError::NothingToChange {
                        target: "the certificates in place".into(),
                    });
                }
                made = true;
                Ok(crate::manifest::cnpg::Rewrite { text, changes })
            },
            &certs,
        )?;
        if !made {
            before = Rollout {
                update_revision: None,
                at: j.data.started_at.clone(),
            };
        }
        let mut trusted: Vec<String> = lost.into_iter().map(|(_, c)| c).collect();
        trusted.push(restored_entry.1);
        Ok(value(Recerted {
            change,
            check: RestartCheck {
                configmap: repl
                    .configmap_name()
                    .unwrap_or_else(|| "kanidm-repl".into()),
                certificates: trusted,
                before,
            },
            certificates: certs,
        }))
    }
}

struct Restarted;
impl<'a> Step<Env<'a>> for Restarted {
    fn name(&self) -> &'static str {
        "restarted"
    }
    fn describe(&self, e: &Env<'a>) -> String {
        describe(self.name(), e.d.ctx, &e.params)
    }
    fn run(&self, e: &Env<'a>, j: &Journal, stop: &AtomicBool) -> Result<Value, Error> {
        let recerted: Recerted = j.output_as(RECERT.change)?;
        kanidm_recert::wait_restarted(e.d.ctx, &e.d.kube, &recerted.check, stop)?;
        Ok(value(serde_json::json!({"restarted": true})))
    }
}

struct Refresh;
impl<'a> Step<Env<'a>> for Refresh {
    fn name(&self) -> &'static str {
        "refresh-consumer"
    }
    fn describe(&self, e: &Env<'a>) -> String {
        describe(self.name(), e.d.ctx, &e.params)
    }
    fn destructive(&self) -> bool {
        true
    }
    fn check(&self, e: &Env<'a>, j: &Journal) -> Result<(), Error> {
        let recerted: Recerted = j.output_as(RECERT.change)?;
        let pods: Vec<(&str, &str)> = e
            .params
            .others
            .iter()
            .zip(&recerted.certificates)
            .map(|(pod, cert)| (pod.as_str(), cert.value.as_str()))
            .collect();
        kanidm_recert::ready_to_refresh(e.d.ctx, &e.d.kube, &recerted.check, &pods)
    }
    fn run(&self, e: &Env<'a>, _: &Journal, _: &AtomicBool) -> Result<Value, Error> {
        for other in &e.params.others {
            kanidm_recert::refresh(e.d.ctx, &e.d.kube, other)?;
        }
        Ok(value(serde_json::json!({"refreshed": e.params.others})))
    }
}

/// The journal's scenario name: `drgit resume` finds this plan by it.
pub const SCENARIO: &str = "kanidm-restore";

/// Goes on with a journaled run (`drgit resume`).
pub fn resume(ctx: &Context, journal: Journal, yes: bool) -> Result<Value, Error> {
    drive(ctx, journal, yes)
}

fn drive(ctx: &Context, journal: Journal, yes: bool) -> Result<Value, Error> {
    let params: Params = journal.params_as()?;
    let confirmation = plan::Confirmation {
        yes,
        word: ctx.config.kanidm.statefulset.clone(),
        what: "the StatefulSet's name".into(),
    };
    let d = Delivery::connect(ctx, params.target.clone(), params.pull_requests)?;
    let env = Env { d, params };
    let (down, up) = (
        Scale {
            stage: DOWN,
            down: true,
        },
        Scale {
            stage: UP,
            down: false,
        },
    );
    let steps: Vec<&dyn Step<Env>> = vec![
        &down,
        &StagedMerge(DOWN),
        &StagedSync(DOWN),
        &PodsGone,
        &Copy,
        &Restore,
        &up,
        &StagedMerge(UP),
        &StagedSync(UP),
        &Healthy,
        &Recert,
        &StagedMerge(RECERT),
        &StagedSync(RECERT),
        &Restarted,
        &Refresh,
    ];
    debug_assert_eq!(steps.len(), STEPS.len());
    plan::drive(&env, &steps, journal, &confirmation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_is_judged_by_its_log() {
        let ok = "INFO Database loaded successfully\nINFO ✅ Restore Success!\n";
        assert_eq!(judge_restore(ok), Ok(()));
        let bad = "ERROR Failed to restore database: Err(SerdeJsonError)\n";
        assert!(
            judge_restore(bad)
                .unwrap_err()
                .contains("Failed to restore")
        );
        let version = "ERROR The provided backup data is from server version 1.8 and is unable to be restored on this instance (1.9)\n";
        assert!(judge_restore(version).is_err());
        assert!(judge_restore("").is_err(), "silence is not success");
    }
}
