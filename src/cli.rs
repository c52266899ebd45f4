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

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DownloadKind {
    Etcd,
    Kanidm,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
    /// Go on with an interrupted `--wait` at its first unfinished step.
    Resume,
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
    let now = crate::timearg::now()?;
    let mut ctx = Context::new(
        &cli.repo,
        cli.config.as_deref(),
        cli.backup_url.as_deref(),
        now,
    )?;
    ctx.kubeconfig = cli.kubeconfig.clone();
    ctx.kube_context = cli.context.clone();
    if matches!(cli.command, Command::Resume | Command::Status) {
        let value = match cli.command {
            Command::Resume => scenario::resume(&ctx, cli.yes)?,
            _ => serde_json::to_value(scenario::status(&ctx)?).unwrap_or_default(),
        };
        let out = if cli.json || value.is_null() {
            format!(
                "{}\n",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            )
        } else {
            crate::output::journal(&value)
        };
        std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes())
            .map_err(|e| Error::Output(e.to_string()))?;
        return Ok(());
    }
    if let Command::Backups(BackupsCommand::Download { kind, name, output }) = &cli.command {
        let store = ctx.open_store()?;
        let (items, dkind) = match kind {
            DownloadKind::Etcd => (
                crate::backup::kinds::etcd_snapshots(
                    store.as_ref(),
                    &ctx.config.talos.etcd_prefix,
                )?,
                crate::backup::download::Kind::Etcd,
            ),
            DownloadKind::Kanidm => (
                crate::backup::kinds::kanidm_backups(
                    store.as_ref(),
                    &ctx.config.kanidm.backup_prefix,
                )?,
                crate::backup::download::Kind::Kanidm,
            ),
        };
        let item = if name == "latest" {
            items.last()
        } else {
            items
                .iter()
                .find(|i| i.key == *name || i.key.rsplit('/').next() == Some(name.as_str()))
        }
        .ok_or_else(|| Error::NoSuchBackup {
            name: name.clone(),
            location: store.describe(),
            have: items
                .iter()
                .rev()
                .take(5)
                .map(|i| i.key.clone())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        let file_name = item.key.rsplit('/').next().unwrap_or("backup").to_string();
        let dest = output.clone().unwrap_or_else(|| PathBuf::from(&file_name));
        let opts = crate::backup::download::Options {
            progress: std::io::IsTerminal::is_terminal(&std::io::stderr()) && !cli.quiet,
            ..Default::default()
        };
        let done =
            crate::backup::download::download(store.as_ref(), &item.key, &dest, dkind, &opts)?;
        let out = if cli.json {
            format!(
                "{}\n",
                serde_json::to_string_pretty(&done).unwrap_or_default()
            )
        } else {
            format!(
                "Downloaded {} to {} ({} bytes{}); checked: {}{}\n",
                done.key,
                done.path.display(),
                done.size,
                if done.resumed_parts > 0 {
                    format!(", resumed after {} part(s)", done.resumed_parts)
                } else {
                    String::new()
                },
                done.checks.join(", "),
                done.version
                    .as_ref()
                    .map(|v| format!("; written by kanidmd {v}"))
                    .unwrap_or_default()
            )
        };
        std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes())
            .map_err(|e| Error::Output(e.to_string()))?;
        return Ok(());
    }
    if let Command::Backups(BackupsCommand::Status { check }) = &cli.command {
        let store = ctx.open_store()?;
        let report = crate::status::collect(store.as_ref(), &ctx.config, ctx.now)?;
        let out = if cli.json {
            let mut v = serde_json::to_value(&report).unwrap_or_default();
            v["problems"] = serde_json::json!(report.problems());
            format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
        } else {
            crate::status::render(&report)
        };
        std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes())
            .map_err(|e| Error::Output(e.to_string()))?;
        if *check && !report.problems().is_empty() {
            return Err(Error::Unhealthy {
                problems: report.problems().len(),
            });
        }
        return Ok(());
    }
    let outcome = match &cli.command {
        Command::PgRecover {
            target_time,
            timezone,
            dry_run,
            publish,
            auto_revert,
            wait,
        } => scenario::pg_recover::run(
            &ctx,
            &scenario::pg_recover::Args {
                target_time: target_time.clone(),
                timezone: timezone.clone(),
                dry_run: *dry_run,
                publish: publish.options(),
                auto_revert: *auto_revert,
                wait: *wait,
                yes: cli.yes,
            },
        )?,
        Command::PgRevert {
            dry_run,
            publish,
            when_healthy,
        } => scenario::pg_revert::run(
            &ctx,
            &scenario::pg_revert::Args {
                dry_run: *dry_run,
                publish: publish.options(),
                when_healthy: *when_healthy,
            },
        )?,
        Command::Backups(_) | Command::Resume | Command::Status => unreachable!("handled above"),
    };
    crate::output::print(&outcome, cli.json).map_err(|e| Error::Output(e.to_string()))
}
