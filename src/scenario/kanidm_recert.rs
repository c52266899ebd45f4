//! `drgit kanidm-recert --pod kanidm-N`: the runbook's Kanidm procedure for
//! one lost pod (its volume lost, the other pod still serving).
//!
//! 1. The lost pod came back empty with a new replication identity: read
//!    its certificate (`kanidmd show-replication-certificate` in the pod,
//!    or `--certificate FILE|-`), check that it is URL-safe base64 DER
//!    X.509, and show its subject and validity.
//! 2. In the ConfigMap manifest, the surviving pod's `partner_cert` for the
//!    lost pod's origin becomes the new certificate. [fix] Its
//!    `automatic_refresh` towards the lost pod goes off in the same change:
//!    left on, the survivor would wipe itself and copy the empty pod as
//!    soon as replication resumes.
//! 3. Diff and plan; a dry run ends here. Then commit and publish.
//! 4. With `--wait`: merged (or pushed), Argo CD synced, the rolling
//!    restart Reloader does when the ConfigMap changes, then (confirmed)
//!    `kanidmd refresh-replication-consumer` in the lost pod, judged from
//!    its output: kanidmd exits 0 even when it refuses or fails.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::delivery::{ArgoSynced, Delivers, Delivery, MAX_POLL, Merge, Target, ms, value};
use super::publish::{self, Mode, Options};
use super::{Context, Detail, Outcome};
use crate::cert::{self, ReplCert};
use crate::error::Error;
use crate::gitops::WorkRepo;
use crate::manifest::{ManifestError, kanidm, yaml};
use crate::plan::{self, Journal, Poll, Step};

const COMMIT_TEMPLATE: &str = include_str!("../../templates/kanidm-recert.commit.j2");
const PR_TEMPLATE: &str = include_str!("../../templates/kanidm-recert.pr.md.j2");

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// `kanidmd show-replication-certificate` in the lost pod.
    Pod,
    /// Text the user gave (`--certificate FILE|-`), and where it was read.
    Given { text: String, from: String },
}

#[derive(Debug, Clone)]
pub struct Args {
    /// The pod that lost its data (`kanidm-1`).
    pub pod: String,
    pub certificate: CertSource,
    pub dry_run: bool,
    pub publish: Options,
    pub wait: bool,
    pub yes: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct KanidmRecertDetail {
    pub pod: String,
    /// The lost pod's replication origin.
    pub origin: String,
    pub certificate: ReplCert,
    /// Where it was read.
    pub certificate_from: String,
    /// The change was already in place: nothing to commit.
    pub in_place: bool,
}

/// What the templates see.
#[derive(Serialize)]
struct Texts<'a> {
    pod: &'a str,
    origin: &'a str,
    namespace: &'a str,
    manifest: &'a str,
    certificate: &'a ReplCert,
    certificate_from: &'a str,
    changes: &'a [String],
    next_steps: &'a [String],
    diffstat: &'a str,
}

/// The ConfigMap manifest as read from the working copy.
pub struct ReplManifest {
    pub rel_path: PathBuf,
    pub text: String,
    pub stream: yaml::Stream,
}

impl ReplManifest {
    pub fn read(ctx: &Context) -> Result<ReplManifest, Error> {
        let rel_path = ctx.config.kanidm.repl_configmap.clone();
        let file = rel_path.display().to_string();
        let text = std::fs::read_to_string(ctx.repo_dir.join(&rel_path)).map_err(|source| {
            Error::ReadManifest {
                file: file.clone(),
                setting: "[kanidm] repl_configmap",
                source,
            }
        })?;
        let stream = yaml::parse(&text).map_err(|source| Error::Manifest { file, source })?;
        Ok(ReplManifest {
            rel_path,
            text,
            stream,
        })
    }

    pub fn error(&self, source: ManifestError) -> Error {
        Error::Manifest {
            file: self.rel_path.display().to_string(),
            source,
        }
    }

    /// `metadata.name` of the ConfigMap that holds the replication settings.
    pub fn configmap_name(&self) -> Option<String> {
        self.stream.docs.iter().find_map(|d| {
            let v = yaml::Resolver::document(d);
            (v.get("kind").and_then(yaml::Value::as_str) == Some("ConfigMap"))
                .then(|| v.path(&["metadata", "name"])?.as_str().map(str::to_string))?
        })
    }
}

/// The lost pod's certificate, from the pod or from what the user gave.
pub fn read_certificate(
    ctx: &Context,
    pod: &str,
    source: &CertSource,
) -> Result<(ReplCert, String), Error> {
    match source {
        CertSource::Given { text, from } => Ok((cert::read(text, from)?, from.clone())),
        CertSource::Pod => {
            let kube = crate::cluster::Kube::connect(
                ctx.kubeconfig.as_deref(),
                ctx.kube_context.as_deref(),
            )?;
            pod_certificate(ctx, &kube, pod)
        }
    }
}

/// `kanidmd show-replication-certificate` in `pod`: its certificate, and
/// where it was read.
pub fn pod_certificate(
    ctx: &Context,
    kube: &crate::cluster::Kube,
    pod: &str,
) -> Result<(ReplCert, String), Error> {
    let (text, from) = pod_certificate_output(ctx, kube, pod)?;
    Ok((cert::read(&text, &from)?, from))
}

/// The certificate value `pod` shows, as printed (not parsed).
pub fn pod_certificate_value(
    ctx: &Context,
    kube: &crate::cluster::Kube,
    pod: &str,
) -> Result<String, Error> {
    let (text, from) = pod_certificate_output(ctx, kube, pod)?;
    Ok(cert::value_in(&text, &from)?)
}

fn pod_certificate_output(
    ctx: &Context,
    kube: &crate::cluster::Kube,
    pod: &str,
) -> Result<(String, String), Error> {
    let k = &ctx.config.kanidm;
    let cmd = [
        "kanidmd",
        "show-replication-certificate",
        "-c",
        k.server_config_path.as_str(),
    ];
    let out = kube.exec(&k.namespace, pod, None, &cmd)?;
    let from = format!(
        "the output of `{}` in pod {}/{pod}",
        cmd.join(" "),
        k.namespace
    );
    // kanidmd exits 0 whatever happened (server/daemon/src/main.rs drops
    // the admin request's exit code): its output decides.
    Ok((format!("{}\n{}", out.stdout, out.stderr), from))
}

pub fn run(ctx: &Context, args: &Args) -> Result<Outcome, Error> {
    let k = &ctx.config.kanidm;
    let mode = args.publish.mode;
    if args.wait && !matches!(mode, Mode::PullRequest | Mode::Direct) {
        return Err(Error::WaitNeedsPublish);
    }
    if args.wait
        && let Ok(repo) = WorkRepo::open(&ctx.repo_dir)
    {
        plan::Journal::refuse_if_running(&repo.git_dir())?;
    }
    let repo = if args.dry_run {
        None
    } else {
        Some(super::preflight(ctx, &k.repl_configmap)?)
    };
    let branch = publish::branch_for(ctx, "kanidm-recert", &args.pod, mode, repo.as_ref())?;

    // Which origin the pod replicates as: from its own settings.
    let manifest = ReplManifest::read(ctx)?;
    let origin = kanidm::origin_of(&manifest.stream, &args.pod).ok_or_else(|| {
        manifest.error(ManifestError::NoOrigin {
            pod: args.pod.clone(),
        })
    })?;

    // Runbook step 1: the new certificate, checked before anything else.
    let (certificate, certificate_from) = read_certificate(ctx, &args.pod, &args.certificate)?;

    // Runbook step 2 [fix]: the survivor's partner_cert, automatic_refresh off.
    let rewrite = match kanidm::set_partner_cert(
        &manifest.text,
        manifest.stream.clone(),
        &origin,
        &certificate.value,
    ) {
        Ok(r) => Some(r),
        Err(ManifestError::NothingToChange { .. }) => None,
        Err(e) => return Err(manifest.error(e)),
    };
    let display = manifest.rel_path.display().to_string();
    let in_place = rewrite.is_none();
    // A change to commit needs a usable branch and remote.
    if let Some(repo) = &repo
        && !in_place
    {
        publish::preflight(ctx, repo, mode, &branch)?;
    }
    let (new_text, changes) = match &rewrite {
        Some(r) => (r.text.clone(), r.changes.clone()),
        None => (manifest.text.clone(), Vec::new()),
    };
    let change = publish::ChangeSet {
        files: vec![publish::FileChange {
            path: manifest.rel_path.clone(),
            old: manifest.text.clone(),
            new: new_text,
        }],
        changes: changes.clone(),
        label: "kanidm-recert",
        branch_key: args.pod.clone(),
    };
    let plan = if in_place {
        vec![format!(
            "Nothing to commit: the certificate is already in place for {origin}, and nothing refreshes automatically towards it. If pod {}/{} was not refreshed yet, run `kubectl exec -n {} {} -- kanidmd refresh-replication-consumer -c {} --i-want-to-refresh-this-servers-database` and look for `success` in its output.",
            k.namespace, args.pod, k.namespace, args.pod, k.server_config_path
        )]
    } else {
        next_steps(ctx, &args.pod, &display, &branch, mode)
    };
    let mut outcome = Outcome {
        scenario: "kanidm-recert",
        manifest: display.clone(),
        dry_run: args.dry_run,
        changes: changes.clone(),
        diff: change.diff(),
        plan: plan.clone(),
        branch: None,
        commit: None,
        published: None,
        wait: None,
        detail: Detail::KanidmRecert(KanidmRecertDetail {
            pod: args.pod.clone(),
            origin: origin.clone(),
            certificate: certificate.clone(),
            certificate_from: certificate_from.clone(),
            in_place,
        }),
    };
    let Some(repo) = repo else {
        return Ok(outcome);
    };
    if in_place {
        return Ok(outcome);
    }

    // Before anything is published: the StatefulSet's revision, so that
    // the restart this change causes can be told from any earlier one.
    let before = if args.wait {
        Some(Rollout::note(ctx)?)
    } else {
        None
    };

    let stat = change.diffstat();
    let texts = Texts {
        pod: &args.pod,
        origin: &origin,
        namespace: &k.namespace,
        manifest: &display,
        certificate: &certificate,
        certificate_from: &certificate_from,
        changes: &changes,
        next_steps: &plan[1..],
        diffstat: &stat,
    };
    let (message, title, body) =
        publish::render_texts(ctx, "kanidm-recert", COMMIT_TEMPLATE, PR_TEMPLATE, &texts)?;
    let (committed, published, _) = publish::commit_and_publish(
        ctx,
        &repo,
        &args.publish,
        &branch,
        &change,
        (&message, &title, &body),
    )?;
    outcome.branch = Some(committed.branch.clone());
    outcome.commit = Some(committed.commit.to_string());
    if let Some(before) = before {
        let params = Params {
            pod: args.pod.clone(),
            configmap: manifest
                .configmap_name()
                .unwrap_or_else(|| "kanidm-repl".into()),
            certificate: certificate.value.clone(),
            before,
            target: Target {
                manifest_dir: manifest
                    .rel_path
                    .parent()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                files: vec![manifest.rel_path.clone()],
                pr: published.pull_request.as_ref().map(|p| p.number),
                commit: (mode == Mode::Direct).then(|| committed.commit.to_string()),
                direct_branch: None,
                scenario: "kanidm-recert".into(),
                application: k.application.clone(),
            },
        };
        outcome.published = Some(published);
        outcome.wait = Some(start(ctx, &repo, params, args.yes)?);
        return Ok(outcome);
    }
    outcome.published = Some(published);
    Ok(outcome)
}

/// What happens after the commit.
fn next_steps(ctx: &Context, pod: &str, manifest: &str, branch: &str, mode: Mode) -> Vec<String> {
    let k = &ctx.config.kanidm;
    let (ns, sts) = (&k.namespace, &k.statefulset);
    let (first, merge) = match mode {
        Mode::Local => (
            format!("Commit the change on branch `{branch}` (nothing leaves this machine)."),
            format!("Push `{branch}` and merge it into the branch Argo CD tracks, after review."),
        ),
        Mode::Push => (
            format!("Commit the change on branch `{branch}` and push it."),
            format!("Open a pull request for `{branch}` and merge it, after review."),
        ),
        Mode::PullRequest => (
            format!("Commit the change on branch `{branch}`, push it and open its pull request."),
            "Review and merge the pull request.".to_string(),
        ),
        Mode::Direct => (
            format!(
                "Commit the change on `{branch}` and push it: Argo CD applies it without review."
            ),
            "Nothing to merge.".to_string(),
        ),
    };
    vec![
        first,
        merge,
        format!(
            "Wait until the Argo CD Application that owns {manifest} reports Synced at a revision that contains that commit and holds the same file."
        ),
        format!(
            "Wait for the rolling restart of StatefulSet {ns}/{sts} that Reloader starts when the ConfigMap changes: every replica updated, `currentRevision` = `updateRevision`, every pod Ready and started after the change."
        ),
        format!(
            "Refresh the lost pod from its partner: `kubectl exec -n {ns} {pod} -- kanidmd refresh-replication-consumer -c {} --i-want-to-refresh-this-servers-database`, and check that its output says `success` (kanidmd exits 0 even when it refuses or fails).",
            k.server_config_path
        ),
    ]
}

/// The StatefulSet before the change, to tell its restart from others.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rollout {
    pub update_revision: Option<String>,
    /// RFC 3339: pods started before this run the old settings.
    pub at: String,
}

impl Rollout {
    pub fn note(ctx: &Context) -> Result<Rollout, Error> {
        let k = &ctx.config.kanidm;
        let kube =
            crate::cluster::Kube::connect(ctx.kubeconfig.as_deref(), ctx.kube_context.as_deref())?;
        let sts = kube
            .statefulset(&k.namespace, &k.statefulset)?
            .ok_or_else(|| Error::NotDone {
                step: "kanidm-recert".into(),
                detail: format!(
                    "StatefulSet {}/{} does not exist, so there is no restart to wait for; check `[kanidm] namespace` and `statefulset`",
                    k.namespace, k.statefulset
                ),
            })?;
        // Whole seconds: a pod's startTime has no finer precision.
        let now = jiff::Timestamp::now().as_second();
        Ok(Rollout {
            update_revision: sts.update_revision,
            at: jiff::Timestamp::from_second(now)
                .unwrap_or_default()
                .to_string(),
        })
    }
}

/// What the wait needs to know; kept in the journal for `drgit resume`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Params {
    pub pod: String,
    /// The live ConfigMap's name (from the manifest).
    pub configmap: String,
    /// The new certificate (public), to find in the live ConfigMap.
    pub certificate: String,
    pub before: Rollout,
    pub target: Target,
}

impl Params {
    fn check(&self) -> RestartCheck {
        RestartCheck {
            configmap: self.configmap.clone(),
            certificates: vec![self.certificate.clone()],
            before: self.before.clone(),
        }
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

/// What a restart must show: the live ConfigMap holding the new
/// certificate(s), and the StatefulSet restarted since `before`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestartCheck {
    pub configmap: String,
    pub certificates: Vec<String>,
    pub before: Rollout,
}

/// One look at the restart: Ready(()) once every pod runs the new settings.
pub fn restart_state(
    ctx: &Context,
    kube: &crate::cluster::Kube,
    p: &RestartCheck,
) -> Result<Poll<()>, Error> {
    let k = &ctx.config.kanidm;
    let live = kube.config_map(&k.namespace, &p.configmap)?;
    let holds = |d: &std::collections::BTreeMap<String, String>| {
        p.certificates
            .iter()
            .all(|c| d.values().any(|v| v.contains(c.as_str())))
    };
    if !live.as_ref().is_some_and(holds) {
        return Ok(Poll::Waiting(format!(
            "ConfigMap {}/{} does not hold the new certificate yet",
            k.namespace, p.configmap
        )));
    }
    let Some(sts) = kube.statefulset(&k.namespace, &k.statefulset)? else {
        return Ok(Poll::Waiting(format!(
            "StatefulSet {}/{} does not exist",
            k.namespace, k.statefulset
        )));
    };
    if sts.update_revision.is_some() && sts.update_revision == p.before.update_revision {
        return Ok(Poll::Waiting(format!(
            "StatefulSet {}/{} has not started a restart (update revision still {})",
            k.namespace,
            k.statefulset,
            sts.update_revision.as_deref().unwrap_or("?")
        )));
    }
    if !sts.rolled_out() {
        return Ok(Poll::Waiting(format!(
            "StatefulSet {}/{} restarting: {}/{} updated, {} ready",
            k.namespace, k.statefulset, sts.updated, sts.replicas, sts.ready
        )));
    }
    let before: jiff::Timestamp = p.before.at.parse().map_err(|e| Error::State {
        path: "journal (params)".into(),
        detail: format!(
            "the time noted before the change, {:?}, is not a time: {e}",
            p.before.at
        ),
    })?;
    let pods = kube.pods(&k.namespace, &sts.selector)?;
    let stale: Vec<String> = pods
        .iter()
        .filter(|pod| {
            pod.deleting
                || !pod.ready
                || pod.revision != sts.update_revision
                || pod.started_at.is_none_or(|t| t < before)
        })
        .map(|pod| pod.name.clone())
        .collect();
    if pods.len() as i32 != sts.replicas || !stale.is_empty() {
        return Ok(Poll::Waiting(format!(
            "{} of {} pods Ready on the new revision (not yet: {})",
            pods.len() - stale.len(),
            sts.replicas,
            stale.join(", ")
        )));
    }
    Ok(Poll::Ready(()))
}

/// Waits (`[kanidm] rollout_timeout_secs`) until `restart_state` holds.
pub fn wait_restarted(
    ctx: &Context,
    kube: &crate::cluster::Kube,
    check: &RestartCheck,
    stop: &AtomicBool,
) -> Result<(), Error> {
    let k = &ctx.config.kanidm;
    let polled = plan::poll_until(
        "restarted",
        Duration::from_secs(k.rollout_timeout_secs),
        (ms(ctx.config.argocd.poll_ms), MAX_POLL),
        stop,
        |_| restart_state(ctx, kube, check),
    )?;
    polled.map_err(|t| Error::NotRestarted {
        namespace: k.namespace.clone(),
        name: k.statefulset.clone(),
        waited: t.waited,
        last: t.last,
    })
}

/// Right before a refresh: still restarted with the new settings, and each
/// pod to refresh shows the certificate put in its partner's settings.
pub fn ready_to_refresh(
    ctx: &Context,
    kube: &crate::cluster::Kube,
    check: &RestartCheck,
    pods: &[(&str, &str)],
) -> Result<(), Error> {
    if let Poll::Waiting(why) = restart_state(ctx, kube, check)? {
        return Err(Error::NotDone {
            step: "restarted".into(),
            detail: format!("{why}; wait for the restart, then `drgit resume`"),
        });
    }
    for (pod, cert) in pods {
        check_identity(ctx, kube, pod, cert)?;
    }
    Ok(())
}

struct Restarted;
impl<'a> Step<Env<'a>> for Restarted {
    fn name(&self) -> &'static str {
        "restarted"
    }
    fn describe(&self, e: &Env<'a>) -> String {
        let k = &e.d.ctx.config.kanidm;
        format!(
            "Wait until ConfigMap {ns}/{} holds the new certificate and StatefulSet {ns}/{} has restarted with it (Reloader): every replica updated and Ready, started after the change",
            e.params.configmap,
            k.statefulset,
            ns = k.namespace
        )
    }
    fn run(&self, e: &Env<'a>, _: &Journal, stop: &AtomicBool) -> Result<Value, Error> {
        wait_restarted(e.d.ctx, &e.d.kube, &e.params.check(), stop)?;
        Ok(value(serde_json::json!({"restarted": true})))
    }
}

/// What kanidmd's `refresh-replication-consumer` said. kanidmd logs
/// (server/daemon/src/main.rs): `success`, or `Error - you should inspect
/// the logs.`, or without the flag `Unwilling to proceed. Check --help.`;
/// it exits 0 in every case.
pub fn judge_refresh(output: &str) -> Result<(), String> {
    const FAILURES: &[&str] = &[
        "Unwilling to proceed",
        "Error - you should inspect the logs",
        "timed out waiting for replication refresh completion",
        "Unable to connect to socket path",
        "Error making request to admin socket",
        "Replication refresh failed",
    ];
    if let Some(f) = FAILURES.iter().find(|f| output.contains(*f)) {
        return Err(format!("kanidmd said \"{f}\""));
    }
    let success = output.lines().any(|l| {
        let l = l.trim_end();
        l == "success" || l.ends_with(": success") || l.ends_with("] success")
    });
    if success {
        Ok(())
    } else {
        Err("kanidmd did not say `success`".into())
    }
}

/// Right before a refresh: the pod's live certificate must be the one put
/// in its partner's settings. A wrong `--pod` (or a certificate file of
/// another pod) would otherwise wipe a pod that has its data.
pub fn check_identity(
    ctx: &Context,
    kube: &crate::cluster::Kube,
    pod: &str,
    expected: &str,
) -> Result<(), Error> {
    let (live, from) = pod_certificate(ctx, kube, pod)?;
    let expected = cert::check(expected, "the journal")?;
    if live.fingerprint != expected.fingerprint {
        return Err(Error::PodCommand {
            what: "the identity check before the refresh".into(),
            namespace: ctx.config.kanidm.namespace.clone(),
            pod: pod.to_string(),
            reason: format!(
                "its certificate ({}) is not the one put in its partner's settings ({}), read from {from}; refreshing it could wipe the wrong pod. Check --pod and the certificate, then run drgit again",
                live.describe(),
                expected.describe()
            ),
            output: String::new(),
        });
    }
    Ok(())
}

/// `kanidmd refresh-replication-consumer` in `pod`, judged from its output.
pub fn refresh(ctx: &Context, kube: &crate::cluster::Kube, pod: &str) -> Result<(), Error> {
    let k = &ctx.config.kanidm;
    let cmd = [
        "kanidmd",
        "refresh-replication-consumer",
        "-c",
        k.server_config_path.as_str(),
        "--i-want-to-refresh-this-servers-database",
    ];
    let out = kube.exec(&k.namespace, pod, None, &cmd)?;
    let text = format!("{}{}", out.stdout, out.stderr);
    judge_refresh(&text).map_err(|reason| Error::PodCommand {
        what: "`kanidmd refresh-replication-consumer`".into(),
        namespace: k.namespace.clone(),
        pod: pod.to_string(),
        reason: format!("{reason}; the pod keeps its empty database. Check both pods' logs (certificates, `Consumer is out of date`), then `drgit resume`"),
        output: tail(&text, 15),
    })
}

/// The end of a command's output, for an error.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

struct Refresh;
impl<'a> Step<Env<'a>> for Refresh {
    fn name(&self) -> &'static str {
        "refresh-consumer"
    }
    fn describe(&self, e: &Env<'a>) -> String {
        let k = &e.d.ctx.config.kanidm;
        format!(
            "Replace the database of pod {}/{} with its partner's: `kanidmd refresh-replication-consumer -c {} --i-want-to-refresh-this-servers-database` in it, judged from its output",
            k.namespace, e.params.pod, k.server_config_path
        )
    }
    fn destructive(&self) -> bool {
        true
    }
    fn check(&self, e: &Env<'a>, _: &Journal) -> Result<(), Error> {
        // Right before: still restarted with the new settings.
        ready_to_refresh(
            e.d.ctx,
            &e.d.kube,
            &e.params.check(),
            &[(&e.params.pod, &e.params.certificate)],
        )
    }
    fn run(&self, e: &Env<'a>, _: &Journal, _: &AtomicBool) -> Result<Value, Error> {
        refresh(e.d.ctx, &e.d.kube, &e.params.pod)?;
        Ok(value(serde_json::json!({"refreshed": true})))
    }
}

/// The journal's scenario name: `drgit resume` finds this plan by it.
pub const SCENARIO: &str = "kanidm-recert-wait";

fn start(ctx: &Context, repo: &WorkRepo, params: Params, yes: bool) -> Result<Value, Error> {
    let journal = Journal::start(&repo.git_dir(), SCENARIO, value(&params))?;
    drive(ctx, journal, yes)
}

/// Goes on with a journaled wait (`drgit resume`).
pub fn resume(ctx: &Context, journal: Journal, yes: bool) -> Result<Value, Error> {
    drive(ctx, journal, yes)
}

fn drive(ctx: &Context, journal: Journal, yes: bool) -> Result<Value, Error> {
    let params: Params = journal.params_as()?;
    let confirmation = plan::Confirmation {
        yes,
        word: params.pod.clone(),
        what: "the pod's name".into(),
    };
    let merge = Merge {
        direct: params.target.direct_branch.is_some(),
    };
    let d = Delivery::connect(ctx, params.target.clone(), false)?;
    let env = Env { d, params };
    let steps: Vec<&dyn Step<Env>> = vec![&merge, &ArgoSynced, &Restarted, &Refresh];
    plan::drive(&env, &steps, journal, &confirmation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_is_judged_by_what_kanidmd_says_not_by_its_exit_code() {
        let ok = "00000000-0000-0000-0000-000000000000 INFO     ｉ [info]: success\n";
        assert_eq!(judge_refresh(ok), Ok(()));
        let unwilling = "00000000-0000-0000-0000-000000000000 ERROR    🚨 [error]: Unwilling to proceed. Check --help.\n";
        assert!(judge_refresh(unwilling).unwrap_err().contains("Unwilling"));
        let failed = "… INFO     ｉ [info]: Error - you should inspect the logs.\n";
        assert!(
            judge_refresh(failed)
                .unwrap_err()
                .contains("inspect the logs")
        );
        assert!(judge_refresh("").is_err(), "silence is not success");
        assert!(
            judge_refresh("INFO unsuccessful").is_err(),
            "only the word on its own"
        );
    }
}
