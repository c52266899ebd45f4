//! The command line: flags and subcommands, dispatched to scenarios.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::error::Error;
use crate::scenario::{self, Context};

#[derive(Debug, Parser)]
#[command(
    name = "drgit",
    version,
    about = "Recover a GitOps-managed Kubernetes cluster from its off-site backups, as reviewed changes in Git"
)]
pub struct Cli {
    /// The GitOps working copy.
    #[arg(long, global = true, default_value = ".")]
    pub repo: PathBuf,
    /// Configuration file (default: <repo>/drgit.toml, then built-in defaults).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Backup store URL, overriding `[backup] url`: s3://bucket/prefix/, file:///dir or a directory.
    #[arg(long, global = true)]
    pub backup_url: Option<String>,
    /// Print one JSON document instead of the human report.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Confirm destructive steps without asking (without it, they ask at a terminal and refuse elsewhere).
    #[arg(long, global = true)]
    pub yes: bool,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current one).
    #[arg(long, global = true)]
    pub context: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// How a change is published (shared by every scenario that edits Git).
#[derive(Debug, Clone, clap::Args)]
pub struct PublishFlags {
    /// Push drgit's branch for this change (`drgit/<scenario>-<cluster>`).
    #[arg(long, conflicts_with = "pr")]
    pub push: bool,
    /// With --push: commit on the branch Argo CD tracks instead (no review).
    #[arg(long, requires = "push")]
    pub direct: bool,
    /// Push drgit's branch and open its pull request, or update the open one.
    #[arg(long)]
    pub pr: bool,
    /// Open the pull request as a draft.
    #[arg(long, requires = "pr")]
    pub draft: bool,
    /// After opening the pull request, wait until it is merged and report the merge commit.
    #[arg(long, requires = "pr")]
    pub wait_merge: bool,
}

impl PublishFlags {
    fn options(&self) -> scenario::publish::Options {
        use scenario::publish::Mode;
        scenario::publish::Options {
            mode: match (self.push, self.direct, self.pr) {
                (_, _, true) => Mode::PullRequest,
                (true, true, _) => Mode::Direct,
                (true, false, _) => Mode::Push,
                _ => Mode::Local,
            },
            draft: self.draft,
            wait_merge: self.wait_merge,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum BackupsCommand {
    /// Every backup kind: newest, age, count, size, retention, the PostgreSQL window and WAL gaps.
    Status {
        /// Exit 1 when anything is stale or broken (for cron and alerting).
        #[arg(long)]
        check: bool,
        #[command(flatten)]
        report: ReportFlags,
    },
    /// Download one backup, verified (and resumed when interrupted).
    Download {
        /// What to download.
        #[arg(value_enum)]
        kind: DownloadKind,
        /// The backup's file name (as `backups status --json` lists it), or `latest`.
        name: String,
        /// Where to write it (default: its file name in the current directory).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// How a report is written, and where its metrics go.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportFlags {
    /// `human`, `json` (as --json), or `openmetrics` (Prometheus text, for alerting).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Also PUT the metrics to this Prometheus Pushgateway (http://host:port) as job `drgit-<command>`; pushed before the exit status is decided.
    #[arg(long, value_name = "URL")]
    push_to: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
    Openmetrics,
}

impl ReportFlags {
    fn format(&self, cli: &Cli) -> Format {
        self.format.unwrap_or(if cli.json {
            Format::Json
        } else {
            Format::Human
        })
    }

    /// Writes the report in its format and pushes its metrics when asked.
    fn write(
        &self,
        cli: &Cli,
        job: &str,
        json: impl FnOnce() -> serde_json::Value,
        human: impl FnOnce() -> String,
        metrics: impl FnOnce() -> String,
    ) -> Result<(), Error> {
        let format = self.format(cli);
        // Rendered once, for the output and the push alike.
        let text = (format == Format::Openmetrics || self.push_to.is_some()).then(metrics);
        match format {
            Format::Json => write_json(&json())?,
            Format::Human => write_out(&human())?,
            Format::Openmetrics => write_out(text.as_deref().unwrap_or_default())?,
        }
        if let (Some(url), Some(text)) = (&self.push_to, &text) {
            crate::metrics::push(url, job, text)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DownloadKind {
    Etcd,
    Kanidm,
}

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// Restore the PostgreSQL base backup and WAL to a target into a throwaway PostgreSQL (barman-cloud-restore, barman-cloud-wal-restore), check it, time it, delete it.
    Pg {
        /// Point in time (as pg-recover takes it); default: the end of the archived WAL.
        #[arg(long)]
        target_time: Option<String>,
        /// IANA time zone for a --target-time written without offset.
        #[arg(long)]
        timezone: Option<String>,
        /// Restore on this machine (the default).
        #[arg(long, conflicts_with = "in_cluster")]
        local: bool,
        /// Restore into a throwaway Cluster created through the API (one instance, no backup section, deleted afterwards, also on failure and Ctrl-C; `drgit resume` deletes one a killed run left).
        #[arg(long)]
        in_cluster: bool,
        #[command(flatten)]
        report: ReportFlags,
    },
    /// Restore an etcd snapshot into a throwaway etcd on loopback and count its keys by kind.
    Etcd {
        /// `latest`, a snapshot's name in the store, or a local file.
        #[arg(long, default_value = "latest")]
        snapshot: String,
        #[command(flatten)]
        report: ReportFlags,
    },
    /// Restore a Kanidm backup in a throwaway pod (an emptyDir, the backup's kanidmd series), check it with `kanidmd domain show`, delete the pod.
    Kanidm {
        /// The backup's file name (as `backups status --json` lists it), or `latest`.
        #[arg(long, default_value = "latest")]
        backup: String,
        /// The kanidmd image (default `[kanidm] image`); it must be of the backup's series.
        #[arg(long)]
        image: Option<String>,
        #[command(flatten)]
        report: ReportFlags,
    },
    /// The PostgreSQL (local), etcd and Kanidm drills, one after the other; a refused one counts as failed.
    All {
        #[command(flatten)]
        report: ReportFlags,
    },
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Prove the backups restore: each restored somewhere harmless, checked, timed, removed. Exit 1 when a drill fails.
    #[command(subcommand)]
    Drill(DrillCommand),
    /// Check, on an ordinary day, that a recovery would work: configuration, each plan, the backups, Git and GitHub access, Kubernetes RBAC, Argo CD, talosctl. Exit 1 when a check fails.
    Doctor {
        #[command(flatten)]
        report: ReportFlags,
    },
    /// The backups in the store.
    #[command(subcommand)]
    Backups(BackupsCommand),
    /// Rewrite the CNPG Cluster to recover from its backups, after checking the target against the recoverable window.
    PgRecover {
        /// Point in time to recover to (RFC 3339, e.g. 2026-11-24T09:00:00Z); default: the end of the archived WAL.
        #[arg(long)]
        target_time: Option<String>,
        /// IANA time zone for a --target-time written without offset (e.g. Asia/Tokyo).
        #[arg(long)]
        timezone: Option<String>,
        /// Show the check, the diff and the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        publish: PublishFlags,
        /// With --pr: record that the revert pull request follows once the Cluster is healthy.
        #[arg(long, requires = "pr")]
        auto_revert: bool,
        /// Then drive the cluster: merged, Argo CD synced, Cluster deleted (confirmed), recovery watched to healthy.
        #[arg(long)]
        wait: bool,
    },
    /// Trust the new replication certificate of a Kanidm pod that lost its data, then (with --wait) refresh it from its partner.
    KanidmRecert {
        /// The pod that lost its data (e.g. kanidm-1).
        #[arg(long)]
        pod: String,
        /// Read the certificate from this file (`-`: standard input) instead of running `kanidmd show-replication-certificate` in the pod: kanidmd's line `certificate: "…"` or the bare value.
        #[arg(long, value_name = "FILE|-")]
        certificate: Option<PathBuf>,
        /// Show the certificate, the diff and the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        publish: PublishFlags,
        /// Then drive the cluster: merged, Argo CD synced, rolling restart, refresh of the pod (confirmed).
        #[arg(long)]
        wait: bool,
    },
    /// Both Kanidm pods lost: restore one from a backup (replicas to 0 and back through Git), then re-certify and refresh the other.
    KanidmRestore {
        /// The backup's file name (as `backups status --json` lists it), or `latest`.
        #[arg(long, default_value = "latest")]
        backup: String,
        /// The pod to restore into.
        #[arg(long, default_value = "kanidm-0")]
        pod: String,
        /// The restore image (default: the StatefulSet's); it must be of the backup's kanidmd series.
        #[arg(long)]
        image: Option<String>,
        /// Show the backup, the first change and every step; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        publish: PublishFlags,
    },
    /// The whole control plane lost: reset every control-plane node and bootstrap etcd from a snapshot (refused while any etcd member is healthy).
    EtcdRecover {
        /// `latest` (skipping newer copies that fail verification), a snapshot's name in the store, or a local file.
        #[arg(long, default_value = "latest")]
        snapshot: String,
        /// The local file is a copy of etcd's data dir, not a snapshot: bootstrap with --recover-skip-hash-check.
        #[arg(long)]
        recover_skip_hash_check: bool,
        /// Go on though no control plane's etcd data (member/snap/db) could be saved before the reset.
        #[arg(long)]
        no_surviving_copy: bool,
        /// Check the snapshot and the nodes, show every command; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Go on with an interrupted `--wait` at its first unfinished step.
    Resume,
    /// Print a shell completion script (e.g. `drgit completions bash > /etc/bash_completion.d/drgit`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff; e.g. `drgit man | man -l -`).
    Man,
    /// The steps of the current (or last) `--wait` run and how far it got.
    Status,
    /// Put the recovered Cluster's bootstrap back to initdb, keeping the new backup lineage.
    PgRevert {
        /// Show the diff and the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        publish: PublishFlags,
        /// First wait until the recovered Cluster is healthy (phase, Ready, all instances); refuse if it is unrecoverable or was never re-created.
        #[arg(long)]
        when_healthy: bool,
    },
}

/// Runs the parsed command line and prints its outcome.
pub fn run(cli: &Cli) -> Result<(), Error> {
    match &cli.command {
        Command::Completions { shell } => return completions(*shell),
        Command::Man => return man(),
        _ => {}
    }
    let now = crate::timearg::now()?;
    let ctx = Context::new(
        &cli.repo,
        cli.config.as_deref(),
        cli.backup_url.as_deref(),
        now,
    );
    let mut ctx = match (ctx, &cli.command) {
        (Ok(ctx), _) => ctx,
        // A configuration that does not load is doctor's first failed check.
        (Err(e), Command::Doctor { report }) => {
            return doctor_report(cli, report, crate::doctor::config_error(&e));
        }
        (Err(e), _) => return Err(e),
    };
    ctx.kubeconfig = cli.kubeconfig.clone();
    ctx.kube_context = cli.context.clone();
    match &cli.command {
        Command::PgRecover {
            target_time,
            timezone,
            dry_run,
            publish,
            auto_revert,
            wait,
        } => pg_recover(
            cli,
            &ctx,
            scenario::pg_recover::Args {
                target_time: target_time.clone(),
                timezone: timezone.clone(),
                dry_run: *dry_run,
                publish: publish.options(),
                auto_revert: *auto_revert,
                wait: *wait,
                yes: cli.yes,
            },
        ),
        Command::PgRevert {
            dry_run,
            publish,
            when_healthy,
        } => pg_revert(
            cli,
            &ctx,
            scenario::pg_revert::Args {
                dry_run: *dry_run,
                publish: publish.options(),
                when_healthy: *when_healthy,
            },
        ),
        Command::KanidmRecert {
            pod,
            certificate,
            dry_run,
            publish,
            wait,
        } => {
            let certificate = match certificate {
                None => scenario::kanidm_recert::CertSource::Pod,
                Some(path) => read_certificate_arg(path)?,
            };
            let args = scenario::kanidm_recert::Args {
                pod: pod.clone(),
                certificate,
                dry_run: *dry_run,
                publish: publish.options(),
                wait: *wait,
                yes: cli.yes,
            };
            let outcome = scenario::kanidm_recert::run(&ctx, &args)?;
            crate::output::print(&outcome, cli.json).map_err(Error::Output)
        }
        Command::KanidmRestore {
            backup,
            pod,
            image,
            dry_run,
            publish,
        } => {
            let args = scenario::kanidm_restore::Args {
                backup: backup.clone(),
                pod: pod.clone(),
                image: image.clone(),
                dry_run: *dry_run,
                publish: publish.options(),
                yes: cli.yes,
                show_plan: (!cli.quiet).then_some(show_plan as fn(&scenario::Outcome)),
            };
            let outcome = scenario::kanidm_restore::run(&ctx, &args)?;
            crate::output::print(&outcome, cli.json).map_err(Error::Output)
        }
        Command::EtcdRecover {
            snapshot,
            recover_skip_hash_check,
            no_surviving_copy,
            dry_run,
        } => {
            let args = scenario::etcd_recover::Args {
                snapshot: snapshot.clone(),
                data_dir_copy: *recover_skip_hash_check,
                no_surviving_copy: *no_surviving_copy,
                dry_run: *dry_run,
                yes: cli.yes,
                show_plan: (!cli.quiet).then_some(show_plan as fn(&scenario::Outcome)),
            };
            let outcome = scenario::etcd_recover::run(&ctx, &args)?;
            crate::output::print(&outcome, cli.json).map_err(Error::Output)
        }
        Command::Resume => resume(cli, &ctx),
        Command::Status => status(cli, &ctx),
        Command::Backups(BackupsCommand::Status { check, report }) => {
            backups_status(cli, &ctx, *check, report)
        }
        Command::Doctor { report } => doctor_report(cli, report, crate::doctor::run(&ctx)),
        Command::Drill(d) => drill(cli, &ctx, d),
        Command::Backups(BackupsCommand::Download { kind, name, output }) => {
            backups_download(cli, &ctx, *kind, name, output.as_deref())
        }
        Command::Completions { .. } | Command::Man => Ok(()),
    }
}

fn completions(shell: clap_complete::Shell) -> Result<(), Error> {
    let mut out = Vec::new();
    clap_complete::generate(
        shell,
        &mut <Cli as clap::CommandFactory>::command(),
        "drgit",
        &mut out,
    );
    write_out(&String::from_utf8_lossy(&out))
}

fn man() -> Result<(), Error> {
    let mut out = Vec::new();
    clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
        .render(&mut out)
        .map_err(Error::Output)?;
    write_out(&String::from_utf8_lossy(&out))
}

fn pg_recover(cli: &Cli, ctx: &Context, args: scenario::pg_recover::Args) -> Result<(), Error> {
    let outcome = scenario::pg_recover::run(ctx, &args)?;
    crate::output::print(&outcome, cli.json).map_err(Error::Output)
}

fn pg_revert(cli: &Cli, ctx: &Context, args: scenario::pg_revert::Args) -> Result<(), Error> {
    let outcome = scenario::pg_revert::run(ctx, &args)?;
    crate::output::print(&outcome, cli.json).map_err(Error::Output)
}

/// Before a long run: what it will do, on stderr.
fn show_plan(o: &scenario::Outcome) {
    eprint!("{}", crate::output::preview(o, false));
}

/// `--certificate FILE|-`: the text, and where it was read.
fn read_certificate_arg(
    path: &std::path::Path,
) -> Result<scenario::kanidm_recert::CertSource, Error> {
    let (text, from) = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text).map_err(
            |source| Error::ReadFile {
                file: "standard input".into(),
                source,
            },
        )?;
        (text, "standard input".to_string())
    } else {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
            file: path.display().to_string(),
            source,
        })?;
        (text, path.display().to_string())
    };
    Ok(scenario::kanidm_recert::CertSource::Given { text, from })
}

fn resume(cli: &Cli, ctx: &Context) -> Result<(), Error> {
    let journal = scenario::resume(ctx, cli.yes)?;
    print_journal(cli, &journal)
}

fn status(cli: &Cli, ctx: &Context) -> Result<(), Error> {
    let journal = serde_json::to_value(scenario::status(ctx)?).unwrap_or_default();
    print_journal(cli, &journal)
}

fn print_journal(cli: &Cli, journal: &serde_json::Value) -> Result<(), Error> {
    if cli.json {
        write_json(journal)
    } else if journal.is_null() {
        write_out("No run of drgit in this repository yet (no .git/drgit/journal.json).\n")
    } else {
        write_out(&crate::output::journal(journal))
    }
}

fn drill(cli: &Cli, ctx: &Context, d: &DrillCommand) -> Result<(), Error> {
    use scenario::drill::{self, EtcdArgs, PgArgs};
    let (reports, flags) = match d {
        DrillCommand::Pg {
            target_time,
            timezone,
            local: _,
            in_cluster,
            report,
        } => {
            let args = PgArgs {
                target_time: target_time.clone(),
                timezone: timezone.clone(),
            };
            let r = if *in_cluster {
                drill::pg_in_cluster(ctx, &args)?
            } else {
                drill::pg_local(ctx, &args)?
            };
            (vec![r], report)
        }
        DrillCommand::Etcd { snapshot, report } => (
            vec![drill::etcd(
                ctx,
                &EtcdArgs {
                    snapshot: snapshot.clone(),
                },
            )?],
            report,
        ),
        DrillCommand::Kanidm {
            backup,
            image,
            report,
        } => (
            vec![drill::kanidm(
                ctx,
                &drill::KanidmArgs {
                    backup: backup.clone(),
                    image: image.clone(),
                },
            )?],
            report,
        ),
        DrillCommand::All { report } => {
            // A drill refused is a failed drill here: the others still run.
            let refused = |kind: &str, e: Error| drill::DrillReport {
                kind: kind.into(),
                mode: if kind == "kanidm" {
                    "in-cluster"
                } else {
                    "local"
                }
                .into(),
                error: Some(e.to_string()),
                ..Default::default()
            };
            let pg = drill::pg_local(ctx, &PgArgs::default()).unwrap_or_else(|e| refused("pg", e));
            let etcd = drill::etcd(
                ctx,
                &EtcdArgs {
                    snapshot: "latest".into(),
                },
            )
            .unwrap_or_else(|e| refused("etcd", e));
            let kanidm = drill::kanidm(
                ctx,
                &drill::KanidmArgs {
                    backup: "latest".into(),
                    image: None,
                },
            )
            .unwrap_or_else(|e| refused("kanidm", e));
            (vec![pg, etcd, kanidm], report)
        }
    };
    flags.write(
        cli,
        "drgit-drill",
        || serde_json::json!({ "drills": &reports }),
        || drill::render(&reports),
        || crate::metrics::drills(&reports, ctx.now),
    )?;
    let failed = reports.iter().filter(|r| !r.ok()).count();
    if failed > 0 {
        return Err(Error::DrillFailed { failed });
    }
    Ok(())
}

fn doctor_report(
    cli: &Cli,
    flags: &ReportFlags,
    report: crate::doctor::Report,
) -> Result<(), Error> {
    flags.write(
        cli,
        "drgit-doctor",
        || serde_json::to_value(&report).unwrap_or_default(),
        || crate::doctor::render(&report),
        || crate::metrics::doctor(&report),
    )?;
    if report.fail > 0 {
        return Err(Error::ChecksFailed {
            failed: report.fail,
        });
    }
    Ok(())
}

fn backups_status(cli: &Cli, ctx: &Context, check: bool, flags: &ReportFlags) -> Result<(), Error> {
    let store = ctx.open_store()?;
    let report = crate::health::collect(store.as_ref(), &ctx.config, ctx.now)?;
    flags.write(
        cli,
        "drgit-backups",
        || {
            let mut v = serde_json::to_value(&report).unwrap_or_default();
            v["problems"] = serde_json::json!(report.problems());
            v
        },
        || crate::health::render(&report),
        || crate::metrics::backups(&report),
    )?;
    if check && !report.problems().is_empty() {
        return Err(Error::Unhealthy {
            problems: report.problems().len(),
        });
    }
    Ok(())
}

fn backups_download(
    cli: &Cli,
    ctx: &Context,
    kind: DownloadKind,
    name: &str,
    output: Option<&std::path::Path>,
) -> Result<(), Error> {
    use crate::backup::download::{self, Kind};
    let store = ctx.open_store()?;
    let (prefix, kind) = match kind {
        DownloadKind::Etcd => (&ctx.config.talos.etcd_prefix, Kind::Etcd),
        DownloadKind::Kanidm => (&ctx.config.kanidm.backup_prefix, Kind::Kanidm),
    };
    let item = crate::backup::kinds::find(store.as_ref(), kind, prefix, name)?;
    let file_name = item.key.rsplit('/').next().unwrap_or("backup").to_string();
    let dest = output.map_or_else(|| PathBuf::from(&file_name), std::path::Path::to_path_buf);
    let opts = download::Options {
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()) && !cli.quiet,
        ..Default::default()
    };
    let done = download::download_item(store.as_ref(), &item, &dest, kind, &opts)?;
    if cli.json {
        write_json(&done)
    } else {
        write_out(&crate::output::downloaded(&done))
    }
}

fn write_json(v: &impl serde::Serialize) -> Result<(), Error> {
    write_out(&format!(
        "{}\n",
        serde_json::to_string_pretty(v).unwrap_or_default()
    ))
}

fn write_out(text: &str) -> Result<(), Error> {
    std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes()).map_err(Error::Output)
}
