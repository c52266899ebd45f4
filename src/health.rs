//! `drgit backups status`: every backup kind in the store against the
//! runbook's expectations (daily backups, 14-day retention, a 7-day CNPG
//! catalog), with the PostgreSQL recoverable window drawn as a timeline.
//!
//! A problem is anything an operator would want to hear about before the
//! day they need the backups: a stale newest backup, retention exceeded or
//! too short, FAILED base backups, WAL gaps, WAL archiving that stopped, a
//! window shorter than expected, a Kanidm backup the restore image cannot
//! read.

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::backup::barman::LineageRead;
use crate::backup::barman::{BaseBackup, Catalog, CatalogError, Gap, Window};
use crate::backup::kinds::{self, Item};
use crate::backup::{Answer, Ask, BackupStore, Request};
use crate::config::Config;

/// One PostgreSQL lineage (a `serverName` folder).
#[derive(Debug, Clone, Serialize)]
pub struct Lineage {
    pub server_name: String,
    /// The lineage with the newest WAL: the one the running Cluster writes.
    pub active: bool,
    pub base_backups: usize,
    pub done: usize,
    pub failed: Vec<String>,
    pub newest_backup: Option<Timestamp>,
    pub oldest_backup: Option<Timestamp>,
    /// When each DONE base backup ended.
    pub backup_ends: Vec<Timestamp>,
    pub total_size: u64,
    pub wal_segments: usize,
    pub newest_wal: Option<Timestamp>,
    pub timelines: Vec<String>,
    /// Per timeline: its segments, its `.partial` files, its history file.
    pub timeline_details: Vec<TimelineInfo>,
    pub windows: Vec<Window>,
    pub gaps: Vec<Gap>,
    /// Every base backup, as its backup.info says.
    pub backups: Vec<BaseBackup>,
    /// Timeline history files (`<tli>.history`).
    pub histories: Vec<String>,
    pub problems: Vec<String>,
}

/// One timeline of a lineage.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineInfo {
    pub timeline: u32,
    /// Segments on the recovery path that belong to this timeline.
    pub segments: usize,
    pub first: Option<String>,
    pub last: Option<String>,
    /// The last segment it wrote before another timeline took over.
    pub partial: Vec<String>,
    pub history: bool,
}

/// etcd or Kanidm.
#[derive(Debug, Clone, Serialize)]
pub struct Kind {
    pub name: &'static str,
    pub prefix: String,
    pub count: usize,
    pub newest: Option<Timestamp>,
    pub oldest: Option<Timestamp>,
    pub total_size: u64,
    pub items: Vec<Item>,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub store: String,
    pub now: Timestamp,
    pub postgres: Vec<Lineage>,
    pub etcd: Kind,
    pub kanidm: Kind,
}

impl Report {
    pub fn problems(&self) -> Vec<String> {
        let mut all = Vec::new();
        for l in &self.postgres {
            all.extend(
                l.problems
                    .iter()
                    .map(|p| format!("postgres `{}`: {p}", l.server_name)),
            );
        }
        if self.postgres.is_empty() {
            all.push("postgres: no barman catalog at all".into());
        }
        all.extend(self.etcd.problems.iter().map(|p| format!("etcd: {p}")));
        all.extend(self.kanidm.problems.iter().map(|p| format!("kanidm: {p}")));
        all
    }
}

fn hours(h: u64) -> SignedDuration {
    SignedDuration::from_hours(h as i64)
}

fn age(now: Timestamp, t: Timestamp) -> SignedDuration {
    now.duration_since(t)
}

/// `3d 4h`, `5h 12m`, `40s`.
pub fn human_age(d: SignedDuration) -> String {
    let s = d.as_secs().max(0);
    match s {
        s if s >= 86_400 => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Problems common to daily, retained backups.
fn schedule_problems(
    cfg: &Config,
    now: Timestamp,
    newest: Option<Timestamp>,
    oldest: Option<Timestamp>,
    count: usize,
    interval_hours: u64,
) -> Vec<String> {
    let e = &cfg.expect;
    let mut p = Vec::new();
    let (Some(newest), Some(oldest)) = (newest, oldest) else {
        p.push("no backups".into());
        return p;
    };
    let limit = hours(interval_hours + e.grace_hours);
    if age(now, newest) > limit {
        p.push(format!(
            "the newest backup is {} old (expected one every {interval_hours}h, {}h grace)",
            human_age(age(now, newest)),
            e.grace_hours
        ));
    }
    let retention = hours(e.retention_days * 24);
    if age(now, oldest) > retention + hours(interval_hours + e.grace_hours) {
        p.push(format!(
            "the oldest backup is {} old, past the {}-day retention (is the lifecycle rule pruning?)",
            human_age(age(now, oldest)),
            e.retention_days
        ));
    }
    let expected = (e.retention_days * 24 / interval_hours.max(1)) as usize;
    if count + 1 < expected && age(now, oldest) + hours(interval_hours) < retention {
        p.push(format!(
            "only {count} backup(s) covering {}; {}-day retention expects about {expected}",
            human_age(age(now, oldest)),
            e.retention_days
        ));
    }
    p
}

/// Reads every backup kind and judges it.
pub fn collect(
    store: &dyn BackupStore,
    cfg: &Config,
    now: Timestamp,
) -> Result<Report, CatalogError> {
    // One crawl: the lineages, etcd and Kanidm listed together; each
    // lineage's requests and the Kanidm headers asked as soon as their
    // listing names them.
    const LINEAGES: usize = 0;
    const ETCD: usize = 1;
    const KANIDM: usize = 2;
    let prefix = &cfg.postgres.catalog_prefix;
    let mut lineages: Vec<(String, LineageRead)> = Vec::new();
    let mut etcd_objects = Vec::new();
    let mut kanidm = kinds::KanidmRead::default();
    let describe = store.describe();
    let start = vec![
        Request::new(LINEAGES, Ask::Level(prefix.clone())),
        Request::new(ETCD, Ask::List(cfg.talos.etcd_prefix.clone())),
        Request::new(KANIDM, kinds::KanidmRead::start(&cfg.kanidm.backup_prefix)),
    ];
    store.crawl(start, &mut |r, answer| match (r.tag, answer) {
        (LINEAGES, Answer::Level(dirs, _)) => {
            let mut next = Vec::new();
            for dir in dirs {
                let server = dir
                    .trim_start_matches(prefix.as_str())
                    .trim_end_matches('/')
                    .to_string();
                let mut read = LineageRead::new(&describe, &dir, &server);
                let tag = KANIDM + 1 + lineages.len();
                next.extend(read.start().into_iter().map(|a| Request::new(tag, a)));
                lineages.push((server, read));
            }
            next
        }
        (ETCD, Answer::Objects(objects)) => {
            etcd_objects = objects;
            Vec::new()
        }
        (KANIDM, answer) => kanidm
            .take(r.ask, answer)
            .into_iter()
            .map(|a| Request::new(KANIDM, a))
            .collect(),
        (tag, answer) => match lineages.get_mut(tag.wrapping_sub(KANIDM + 1)) {
            Some((_, read)) => read
                .take(r.ask, answer)
                .into_iter()
                .map(|a| Request::new(tag, a))
                .collect(),
            None => Vec::new(),
        },
    })?;
    let mut postgres = Vec::new();
    for (server, read) in lineages {
        let catalog = match read.finish() {
            Ok(c) => c,
            Err(CatalogError::Empty { .. }) => continue,
            Err(e) => return Err(e),
        };
        postgres.push(lineage(&catalog, &server));
    }
    if let Some(active) = postgres
        .iter_mut()
        .filter(|l| l.newest_wal.is_some())
        .max_by_key(|l| l.newest_wal)
    {
        active.active = true;
    }
    for l in &mut postgres {
        judge_lineage(l, cfg, now);
    }

    let etcd_items = kinds::etcd_items(etcd_objects);
    let kanidm_items = kanidm.finish();
    let mut etcd = kind("etcd", &cfg.talos.etcd_prefix, etcd_items);
    etcd.problems = schedule_problems(
        cfg,
        now,
        etcd.newest,
        etcd.oldest,
        etcd.count,
        cfg.expect.etcd_hours,
    );
    let mut kanidm = kind("kanidm", &cfg.kanidm.backup_prefix, kanidm_items);
    kanidm.problems = schedule_problems(
        cfg,
        now,
        kanidm.newest,
        kanidm.oldest,
        kanidm.count,
        cfg.expect.kanidm_hours,
    );
    if let Some(newest) = kanidm.items.last() {
        match (&newest.version, &newest.problem) {
            (_, Some(p)) => kanidm.problems.push(format!("{}: {p}", newest.key)),
            (Some(v), None) => {
                if let Err(why) = kinds::restore_image_matches(v, &cfg.kanidm.image) {
                    kanidm.problems.push(format!("{}: {why}", newest.key));
                }
            }
            _ => {}
        }
    }
    Ok(Report {
        store: store.describe(),
        now,
        postgres,
        etcd,
        kanidm,
    })
}

fn kind(name: &'static str, prefix: &str, items: Vec<Item>) -> Kind {
    Kind {
        name,
        prefix: prefix.to_string(),
        count: items.len(),
        newest: items.last().map(|i| i.time),
        oldest: items.first().map(|i| i.time),
        total_size: items.iter().map(|i| i.size).sum(),
        items,
        problems: Vec::new(),
    }
}

fn lineage(c: &Catalog, server: &str) -> Lineage {
    let done: Vec<_> = c.backups.iter().filter(|b| b.status == "DONE").collect();
    let mut timelines: Vec<String> = c
        .segments
        .iter()
        .map(|s| format!("{}", s.timeline))
        .collect();
    timelines.dedup();
    timelines.sort();
    timelines.dedup();
    let mut tlis: Vec<u32> = c.segments.iter().map(|s| s.timeline).collect();
    for p in &c.partials {
        if let Ok(t) = u32::from_str_radix(p.get(..8).unwrap_or(""), 16) {
            tlis.push(t);
        }
    }
    tlis.sort();
    tlis.dedup();
    let timeline_details = tlis
        .into_iter()
        .map(|t| {
            let on: Vec<_> = c.segments.iter().filter(|s| s.timeline == t).collect();
            TimelineInfo {
                timeline: t,
                segments: on.len(),
                first: on.first().map(|s| s.name.clone()),
                last: on.last().map(|s| s.name.clone()),
                partial: c
                    .partials
                    .iter()
                    .filter(|p| p.starts_with(&format!("{t:08X}")))
                    .cloned()
                    .collect(),
                history: c
                    .histories
                    .iter()
                    .any(|h| h.starts_with(&format!("{t:08X}.history"))),
            }
        })
        .collect();
    Lineage {
        server_name: server.to_string(),
        timeline_details,
        active: false,
        base_backups: c.backups.len(),
        done: done.len(),
        failed: c
            .backups
            .iter()
            .filter(|b| b.status != "DONE")
            .map(|b| format!("{} ({})", b.id, b.status))
            .collect(),
        newest_backup: done.iter().filter_map(|b| b.end_time).max(),
        oldest_backup: done.iter().filter_map(|b| b.end_time).min(),
        backup_ends: done.iter().filter_map(|b| b.end_time).collect(),
        total_size: c.backups.iter().map(|b| b.size).sum(),
        wal_segments: c.segments.len(),
        newest_wal: c.segments.iter().map(|s| s.last_modified).max(),
        timelines,
        windows: c.windows(),
        gaps: c.gaps(),
        backups: c.backups.clone(),
        histories: c.histories.clone(),
        problems: Vec::new(),
    }
}

fn judge_lineage(l: &mut Lineage, cfg: &Config, now: Timestamp) {
    let e = &cfg.expect;
    if !l.failed.is_empty() {
        l.problems
            .push(format!("base backups not DONE: {}", l.failed.join(", ")));
    }
    for g in &l.gaps {
        l.problems.push(format!(
            "WAL gap: {} segment(s) missing from {} (after {}); recovery cannot pass {}",
            g.missing,
            g.first_missing,
            g.after,
            crate::timearg::Second(g.reach)
        ));
    }
    if !l.active {
        return; // an earlier lineage: kept for recovery, not expected to grow
    }
    if l.done == 0 {
        l.problems
            .push("no DONE base backup: nothing to recover from".into());
    }
    if let Some(t) = l.newest_backup
        && age(now, t) > hours(e.base_backup_hours + e.grace_hours)
    {
        l.problems.push(format!(
            "the newest base backup is {} old (expected one every {}h, {}h grace)",
            human_age(age(now, t)),
            e.base_backup_hours,
            e.grace_hours
        ));
    }
    if let Some(t) = l.newest_wal
        && age(now, t) > hours(e.grace_hours)
    {
        l.problems.push(format!(
            "no WAL archived for {}: is archiving stopped?",
            human_age(age(now, t))
        ));
    }
    match (l.windows.first(), l.windows.last()) {
        (Some(first), Some(_)) => {
            let covered = age(now, first.start);
            let expected = hours(e.catalog_days * 24);
            if covered + hours(e.base_backup_hours) < expected {
                l.problems.push(format!(
                    "the recoverable window reaches back {} only; the {}-day catalog should reach about {} days",
                    human_age(covered),
                    e.catalog_days,
                    e.catalog_days
                ));
            }
        }
        _ => l.problems.push("no recoverable window".into()),
    }
}

/// The recoverable window as one line of `width` cells from `from` to `to`:
/// `█` recoverable, `·` not, `B` a base backup's end, `!` a gap.
pub fn timeline(
    l: &Lineage,
    backups: &[Timestamp],
    from: Timestamp,
    to: Timestamp,
    width: usize,
) -> String {
    let span = to.duration_since(from).as_secs_f64().max(1.0);
    let cell = |t: Timestamp| -> usize {
        let x = t.duration_since(from).as_secs_f64() / span * width as f64;
        (x.max(0.0) as usize).min(width - 1)
    };
    let mut cells = vec!['·'; width];
    for w in &l.windows {
        for c in cells.iter_mut().take(cell(w.end) + 1).skip(cell(w.start)) {
            *c = '█';
        }
    }
    for b in backups {
        cells[cell(*b)] = 'B';
    }
    for g in &l.gaps {
        cells[cell(g.reach)] = '!';
    }
    cells.into_iter().collect()
}

/// The human report.
pub fn render(r: &Report) -> String {
    let mut s = format!(
        "Backups in {} (now {})\n\n",
        r.store,
        crate::timearg::Second(r.now)
    );
    s.push_str("PostgreSQL (barman-cloud)\n");
    if r.postgres.is_empty() {
        s.push_str("  no catalog\n");
    }
    for l in &r.postgres {
        s.push_str(&format!(
            "  {}{}: {} base backup(s) ({} DONE), {} WAL segment(s) on timeline(s) {}, {}\n",
            l.server_name,
            if l.active { " (active)" } else { "" },
            l.base_backups,
            l.done,
            l.wal_segments,
            if l.timelines.is_empty() {
                "-".into()
            } else {
                l.timelines.join(", ")
            },
            human_size(l.total_size)
        ));
        if let Some(t) = l.newest_backup {
            s.push_str(&format!(
                "    newest base backup {} ({} ago)\n",
                crate::timearg::Second(t),
                human_age(age(r.now, t))
            ));
        }
        if let Some(t) = l.newest_wal {
            s.push_str(&format!(
                "    newest WAL         {} ({} ago)\n",
                crate::timearg::Second(t),
                human_age(age(r.now, t))
            ));
        }
        if l.timeline_details.len() > 1 {
            for t in &l.timeline_details {
                s.push_str(&format!(
                    "    timeline {}: {} segment(s){}{}{}\n",
                    t.timeline,
                    t.segments,
                    match (&t.first, &t.last) {
                        (Some(a), Some(b)) => format!(" {a}..{b}"),
                        _ => String::new(),
                    },
                    if t.partial.is_empty() {
                        String::new()
                    } else {
                        format!(", ends in {}", t.partial.join(", "))
                    },
                    if t.history { ", history file" } else { "" }
                ));
            }
        }
        for w in &l.windows {
            s.push_str(&format!(
                "    window {} → {} (from {})\n",
                crate::timearg::SecondUp(w.start),
                crate::timearg::Second(w.last_second()),
                w.backup
            ));
        }
        if let (Some(first), Some(last)) = (l.windows.first(), l.windows.last()) {
            s.push_str(&format!(
                "    {} |{}| {}\n",
                first.start.strftime("%m-%d %H:%M"),
                timeline(l, &l.backup_ends, first.start, last.end, 48),
                last.end.strftime("%m-%d %H:%M")
            ));
        }
        for p in &l.problems {
            s.push_str(&format!("    ! {p}\n"));
        }
    }
    for k in [&r.etcd, &r.kanidm] {
        s.push_str(&format!(
            "\n{} ({})\n",
            if k.name == "etcd" {
                "etcd snapshots"
            } else {
                "Kanidm backups"
            },
            k.prefix
        ));
        match (k.newest, k.oldest) {
            (Some(n), Some(o)) => s.push_str(&format!(
                "  {} backup(s), {}; newest {} ({} ago), oldest {} ({} ago)\n",
                k.count,
                human_size(k.total_size),
                crate::timearg::Second(n),
                human_age(age(r.now, n)),
                crate::timearg::Second(o),
                human_age(age(r.now, o))
            )),
            _ => s.push_str("  none\n"),
        }
        if let Some(newest) = k.items.last()
            && let Some(v) = &newest.version
        {
            s.push_str(&format!(
                "  newest written by kanidmd {v}{}\n",
                if newest.gzip == Some(true) {
                    ", gzip"
                } else {
                    ""
                }
            ));
        }
        for p in &k.problems {
            s.push_str(&format!("  ! {p}\n"));
        }
    }
    let problems = r.problems();
    s.push_str(&format!(
        "\n{}\n",
        if problems.is_empty() {
            "No problems.".to_string()
        } else {
            format!("{} problem(s).", problems.len())
        }
    ));
    s
}
