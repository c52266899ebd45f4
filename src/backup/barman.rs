//! The barman-cloud catalog of one PostgreSQL server (one CNPG lineage):
//! base backups, archived WAL, and the recoverable window they give.
//!
//! Layout (`<prefix><serverName>/…`, as barman-cloud writes it):
//! `base/<YYYYMMDDTHHMMSS>/backup.info` (written last, `key=value` lines with
//! Python-repr values) beside `data.tar[.gz|…]`; `wals/<timeline+log>/<segment>[.gz|…]`
//! with `.backup` and `.partial` files in the same folder and `<tli>.history`
//! at the `wals/` root.
//!
//! The window: a target is reachable from a DONE base backup that ended
//! before it when every WAL segment from the backup's first one up to the
//! target is archived, and a commit or abort record at or after the target
//! is archived too: PostgreSQL stops only at those, and a target after the
//! last one ends with "recovery ended before configured recovery target
//! was reached". So each unbroken chain of segments ends at the newest
//! transaction end read from its last segments ([`super::wal`]), not at
//! the newest object's LastModified (a segment is archived when it fills
//! or at `archive_timeout`, long after its last commit; and S3's
//! LastModified has whole seconds). A missing segment is a gap: the chain
//! before it ends there.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use serde::Serialize;

use super::wal;
use super::{Answer, Ask, BackupStore, ObjectMeta, Request, StoreError};

/// How many segments drgit reads back from a chain's end looking for its
/// newest transaction end, before it gives up (4 GiB of WAL at 16 MiB:
/// more than a day of an idle server switching every 5 minutes).
const MAX_SEGMENTS_BACK: u64 = 256;

/// Why the catalog cannot support a recovery.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "no barman catalog under {location}: no objects at all. Check `[backup] url` (or --backup-url) and that the Cluster's backups use serverName `{server}`"
    )]
    Empty { location: String, server: String },
    #[error("{location}: {detail}")]
    Unusable { location: String, detail: String },
    #[error("{location}: {source}")]
    Target {
        location: String,
        source: Box<TargetError>,
    },
    #[error("{key}: {detail}")]
    BadBackupInfo { key: String, detail: String },
}

/// One base backup, from its `backup.info`.
#[derive(Debug, Clone, Serialize)]
pub struct BaseBackup {
    pub id: String,
    pub status: String,
    pub begin_time: Option<Timestamp>,
    pub end_time: Option<Timestamp>,
    pub begin_wal: Option<String>,
    pub end_wal: Option<String>,
    pub timeline: Option<u32>,
    pub compression: Option<String>,
    /// Bytes of every object in the backup's folder.
    pub size: u64,
    /// The server's version (`version=150018`: PostgreSQL 15.18).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pg_version: Option<u32>,
}

/// One archived WAL segment.
#[derive(Debug, Clone, Serialize)]
pub struct WalSegment {
    pub name: String,
    /// The object's key in the store.
    #[serde(skip)]
    pub key: String,
    pub timeline: u32,
    /// log * segments-per-log + segment: consecutive segments differ by one.
    pub position: u64,
    pub last_modified: Timestamp,
}

/// A stretch of time a recovery can reach: from `start` (included) to
/// `end` (excluded). `end` is the newest commit: with the default
/// `recovery_target_inclusive`, PostgreSQL stops before the first commit
/// LATER than the target (xlogrecovery.c `recoveryStopsBefore`), so a target
/// at or after the newest commit is never reached.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
    /// The base backup the stretch starts from.
    pub backup: String,
}

/// Where an unbroken chain of archived segments ends, and the newest
/// point in it that a recovery can stop at.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChainEnd {
    /// The chain's last segment.
    pub segment: String,
    pub position: u64,
    /// The newest commit or abort record in the chain, read from the WAL.
    pub last_xact_end: Option<Timestamp>,
    /// The segment it is in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found_in: Option<String>,
    /// How many segments were read back from the end.
    pub segments_read: u64,
    /// How long fetching, decompressing and reading them took.
    pub read_ms: f64,
    /// Why the WAL could not be read, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Window {
    /// The last whole second inside the window (its end is excluded).
    pub fn last_second(&self) -> Timestamp {
        self.end
            .checked_sub(jiff::SignedDuration::from_micros(1))
            .unwrap_or(self.end)
    }
}

impl fmt::Display for Window {
    /// To the second, both ends inside the window.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} → {} (from base backup {})",
            crate::timearg::SecondUp(self.start),
            crate::timearg::Second(self.last_second()),
            self.backup
        )
    }
}

/// Segments missing from the archive.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gap {
    /// The last archived segment before the gap.
    pub after: String,
    /// How many segments are missing.
    pub missing: u64,
    /// The first missing segment's name (on the timeline before the gap).
    pub first_missing: String,
    /// The newest transaction end before the gap (read from the WAL; the
    /// LastModified of the segment before it when that was not read):
    /// recovery reaches no later.
    pub reach: Timestamp,
}

/// What a target time resolved to.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub target: Timestamp,
    /// The base backup CNPG starts from: the newest DONE one ended before the target.
    pub backup: String,
    pub window: Window,
}

/// A target time the catalog cannot reach.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TargetError {
    #[error(
        "target {target} is before the end of the first usable base backup ({}); CNPG would fail with \"no target backup found\". Recoverable: {windows}",
        crate::timearg::SecondUp(*first)
    )]
    BeforeFirstBackup {
        target: Timestamp,
        first: Timestamp,
        windows: WindowList,
    },
    #[error(
        "target {target} is not before the last transaction in the archived WAL (committed at {end}, in segment {segment}); PostgreSQL stops only at a commit later than the target, so it would fail with \"recovery ended before configured recovery target was reached\". Pick a time before {end}, or leave out --target-time to recover everything archived. Recoverable: {windows}"
    )]
    AfterLastWal {
        target: Timestamp,
        end: Timestamp,
        segment: String,
        windows: WindowList,
    },
    #[error(
        "target {target} falls in a WAL gap: {missing} segment(s) from {first_missing} are missing after {after}, so recovery stops at {}. Pick a time inside: {windows}",
        crate::timearg::Second(*reach)
    )]
    InGap {
        target: Timestamp,
        after: String,
        first_missing: String,
        missing: u64,
        reach: Timestamp,
        windows: WindowList,
    },
}

/// Windows, printed as `A → B (from backup X); …`.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowList(pub Vec<Window>);

impl fmt::Display for WindowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|w| w.to_string()).collect();
        f.write_str(&parts.join("; "))
    }
}

/// The catalog of one server name.
#[derive(Debug, Clone, Serialize)]
pub struct Catalog {
    /// Where it was read, for messages: `file:///…/cnpg/shared-pg/`.
    pub location: String,
    pub backups: Vec<BaseBackup>,
    /// Archived segments by position (the newest timeline wins a position).
    pub segments: Vec<WalSegment>,
    pub histories: Vec<String>,
    pub partials: Vec<String>,
    pub segment_size: u64,
    /// Where each unbroken chain of segments ends, read from the WAL.
    pub chain_ends: Vec<ChainEnd>,
}

const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// Parses a barman `backup.info`.
pub fn parse_backup_info(key: &str, text: &str) -> Result<BTreeMap<String, String>, CatalogError> {
    let mut map = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(CatalogError::BadBackupInfo {
                key: key.to_string(),
                detail: format!("line {} is not `key=value`", n + 1),
            });
        };
        if v != "None" {
            map.insert(k.trim().to_string(), v.to_string());
        }
    }
    Ok(map)
}

/// Parses barman's `2026-11-24 12:20:56.929850+00:00`.
pub fn parse_python_time(s: &str) -> Option<Timestamp> {
    s.trim().replacen(' ', "T", 1).parse().ok()
}

/// Splits a WAL file name into (timeline, log, segment) when it is a
/// plain segment (24 hex digits, optional compression suffix): not a
/// `.backup` label, `.partial` or `.history` file.
pub fn parse_segment(file: &str) -> Option<(u32, u64, u64)> {
    let (stem, ext) = file.split_once('.').unwrap_or((file, ""));
    if stem.len() != 24 || !stem.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if !matches!(ext, "" | "gz" | "bz2" | "snappy" | "zst" | "lz4" | "xz") {
        return None;
    }
    let tli = u32::from_str_radix(&stem[0..8], 16).ok()?;
    let log = u64::from_str_radix(&stem[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&stem[16..24], 16).ok()?;
    Some((tli, log, seg))
}

impl Catalog {
    /// Reads `<prefix>` (ending in `<serverName>/`) from the store, each
    /// request as soon as what it needs is known ([`LineageRead`]).
    pub fn read(
        store: &dyn BackupStore,
        prefix: &str,
        server: &str,
    ) -> Result<Catalog, CatalogError> {
        let mut read = LineageRead::new(&store.describe(), prefix, server);
        let tag = |asks: Vec<Ask>| asks.into_iter().map(|a| Request::new(0, a)).collect();
        store.crawl(tag(read.start()), &mut |r, answer| {
            tag(read.take(r.ask, answer))
        })?;
        read.finish()
    }

    /// Reads the catalog as [`Catalog::read`] does and, in the same crawl,
    /// whether the prefix `probe` (a lineage to be) holds nothing.
    pub fn read_probing(
        store: &dyn BackupStore,
        prefix: &str,
        server: &str,
        probe: &str,
    ) -> Result<(Catalog, bool), CatalogError> {
        const CATALOG: usize = 0;
        const PROBE: usize = 1;
        let mut read = LineageRead::new(&store.describe(), prefix, server);
        let mut probe_empty = true;
        let tag = |asks: Vec<Ask>| asks.into_iter().map(|a| Request::new(CATALOG, a));
        let start = tag(read.start())
            .chain([Request::new(PROBE, Ask::Level(probe.to_string()))])
            .collect();
        store.crawl(start, &mut |r, answer| match (r.tag, answer) {
            (PROBE, Answer::Level(dirs, objects)) => {
                probe_empty = dirs.is_empty() && objects.is_empty();
                Vec::new()
            }
            (_, answer) => tag(read.take(r.ask, answer)).collect(),
        })?;
        Ok((read.finish()?, probe_empty))
    }

    /// The catalog from the objects listed under `prefix` and the
    /// `backup.info` contents by key; the chain ends are read after.
    fn build(
        location: String,
        prefix: &str,
        server: &str,
        objects: &[ObjectMeta],
        infos: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Catalog, CatalogError> {
        if objects.is_empty() {
            return Err(CatalogError::Empty {
                location,
                server: server.to_string(),
            });
        }
        let base_prefix = format!("{prefix}base/");
        let wal_prefix = format!("{prefix}wals/");

        let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
        let mut wal: Vec<&ObjectMeta> = Vec::new();
        for o in objects {
            if let Some(rest) = o.key.strip_prefix(&base_prefix) {
                if let Some((id, _)) = rest.split_once('/') {
                    *sizes.entry(id.to_string()).or_default() += o.size;
                }
            } else if o.key.starts_with(&wal_prefix) {
                wal.push(o);
            }
        }

        let mut backups = Vec::new();
        let mut segment_size = DEFAULT_SEGMENT_SIZE;
        for (key, bytes) in infos {
            let text = String::from_utf8_lossy(bytes);
            let kv = parse_backup_info(key, &text)?;
            let id = key[base_prefix.len()..]
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string();
            let time =
                |k: &str| -> Result<Option<Timestamp>, CatalogError> {
                    match kv.get(k) {
                        None => Ok(None),
                        Some(v) => parse_python_time(v).map(Some).ok_or_else(|| {
                            CatalogError::BadBackupInfo {
                                key: key.clone(),
                                detail: format!("`{k}={v}` is not a time"),
                            }
                        }),
                    }
                };
            if let Some(s) = kv.get("xlog_segment_size").and_then(|s| s.parse().ok()) {
                segment_size = s;
            }
            backups.push(BaseBackup {
                status: kv
                    .get("status")
                    .cloned()
                    .unwrap_or_else(|| "UNKNOWN".into()),
                begin_time: time("begin_time")?,
                end_time: time("end_time")?,
                begin_wal: kv.get("begin_wal").cloned(),
                end_wal: kv.get("end_wal").cloned(),
                timeline: kv.get("timeline").and_then(|t| t.parse().ok()),
                compression: kv.get("compression").cloned(),
                pg_version: kv.get("version").and_then(|v| v.parse().ok()),
                size: sizes.get(&id).copied().unwrap_or(0),
                id,
            });
        }
        backups.sort_by(|a, b| a.id.cmp(&b.id));

        let per_log = (1u64 << 32) / segment_size.max(1);
        let mut by_pos: BTreeMap<u64, WalSegment> = BTreeMap::new();
        let mut histories = Vec::new();
        let mut partials = Vec::new();
        for o in wal {
            let file = o.key.rsplit('/').next().unwrap_or_default();
            if file.ends_with(".history") || file.contains(".history.") {
                histories.push(file.to_string());
                continue;
            }
            if file.contains(".partial") {
                partials.push(file.to_string());
                continue;
            }
            let Some((tli, log, seg)) = parse_segment(file) else {
                continue; // `.backup` labels and anything else
            };
            let position = log * per_log + seg;
            let s = WalSegment {
                name: file.split('.').next().unwrap_or(file).to_string(),
                key: o.key.clone(),
                timeline: tli,
                position,
                last_modified: o.last_modified,
            };
            match by_pos.get(&position) {
                Some(old) if old.timeline >= tli => {}
                _ => {
                    by_pos.insert(position, s);
                }
            }
        }
        Ok(Catalog {
            location,
            backups,
            segments: by_pos.into_values().collect(),
            histories,
            partials,
            segment_size,
            chain_ends: Vec::new(),
        })
    }

    /// Each DONE backup's chain: the positions of its first segment and of
    /// the last one before the archive ends or a gap.
    fn chains(&self) -> Vec<(&BaseBackup, u64, u64)> {
        let mut out = Vec::new();
        for b in self.backups.iter().filter(|b| b.status == "DONE") {
            let (Some(begin), Some(end)) = (
                b.begin_wal.as_deref().and_then(|w| self.position_of(w)),
                b.end_wal.as_deref().and_then(|w| self.position_of(w)),
            ) else {
                continue;
            };
            let mut pos = begin;
            while self.segment_at(pos).is_some() {
                pos += 1;
            }
            if pos == begin || pos - 1 < end {
                continue; // the backup's own WAL is incomplete: not restorable
            }
            out.push((b, begin, pos - 1));
        }
        out
    }

    /// Where to start reading each chain's end: the position of its last
    /// segment and the lowest position it may go back to (the chain's
    /// first backup's first segment).
    fn chain_end_reads(&self) -> Vec<EndRead> {
        let mut lowest: BTreeMap<u64, u64> = BTreeMap::new();
        for (_, begin, end) in self.chains() {
            let low = lowest.entry(end).or_insert(begin);
            *low = (*low).min(begin);
        }
        lowest
            .into_iter()
            // Chains end at archived segments, and run unbroken back to `low`.
            .filter_map(|(end, low)| {
                let last = self.segment_at(end)?;
                Some(EndRead {
                    found: ChainEnd {
                        segment: last.name.clone(),
                        position: end,
                        last_xact_end: None,
                        found_in: None,
                        segments_read: 0,
                        read_ms: 0.0,
                        error: None,
                    },
                    pos: end,
                    low,
                    next: None,
                    started: std::time::Instant::now(),
                    done: false,
                })
            })
            .collect()
    }

    /// Takes the segment an end read asked for: the newest transaction end
    /// in it, or the segment before to read next (at most
    /// [`MAX_SEGMENTS_BACK`], and not before the chain's first backup).
    fn step_end(&self, read: &mut EndRead, bytes: &[u8]) -> Option<Ask> {
        let seg = self.segment_at(read.pos)?;
        let found = &mut read.found;
        found.segments_read += 1;
        let scanned = wal::decompress(&seg.key, bytes).and_then(|bytes| {
            let start = wal::segment_start(&seg.name, self.segment_size).unwrap_or_default();
            wal::scan(&seg.name, start, &bytes, read.next.as_deref()).map(|s| (s, bytes))
        });
        let more = match scanned {
            Ok((scan, bytes)) => match scan.newest() {
                Some(t) => {
                    found.last_xact_end = Some(t);
                    found.found_in = Some(seg.name.clone());
                    false
                }
                None => {
                    read.next = Some(bytes);
                    true
                }
            },
            Err(e) => {
                found.error = Some(e.to_string());
                false
            }
        };
        let end = found.position;
        let next = if !more {
            None
        } else if read.pos == read.low || end - read.pos + 1 >= MAX_SEGMENTS_BACK {
            if read.pos != read.low {
                found.error = Some(format!(
                    "no commit or abort record in the last {MAX_SEGMENTS_BACK} segments up to {}",
                    found.segment
                ));
            }
            None
        } else {
            read.pos -= 1;
            self.segment_at(read.pos).map(|s| Ask::Get(s.key.clone()))
        };
        if next.is_none() {
            read.done = true;
            found.read_ms = read.started.elapsed().as_secs_f64() * 1000.0;
            tracing::debug!(segment = %found.segment, last = ?found.last_xact_end, read = found.segments_read, ms = found.read_ms, "chain end");
        }
        next
    }

    /// The archived segment at a position (`segments` is sorted by it).
    fn segment_at(&self, position: u64) -> Option<&WalSegment> {
        self.segments
            .binary_search_by_key(&position, |s| s.position)
            .ok()
            .map(|i| &self.segments[i])
    }

    fn chain_end(&self, position: u64) -> Option<&ChainEnd> {
        self.chain_ends.iter().find(|c| c.position == position)
    }

    fn per_log(&self) -> u64 {
        (1u64 << 32) / self.segment_size.max(1)
    }

    fn position_of(&self, name: &str) -> Option<u64> {
        parse_segment(name).map(|(_, log, seg)| log * self.per_log() + seg)
    }

    fn name_at(&self, tli: u32, pos: u64) -> String {
        format!(
            "{tli:08X}{:08X}{:08X}",
            pos / self.per_log(),
            pos % self.per_log()
        )
    }

    /// Every gap between the oldest and the newest archived segment.
    pub fn gaps(&self) -> Vec<Gap> {
        self.segments
            .windows(2)
            .filter(|w| w[1].position > w[0].position + 1)
            .map(|w| Gap {
                after: w[0].name.clone(),
                missing: w[1].position - w[0].position - 1,
                first_missing: self.name_at(w[0].timeline, w[0].position + 1),
                reach: self
                    .chain_end(w[0].position)
                    .and_then(|c| c.last_xact_end)
                    .unwrap_or(w[0].last_modified),
            })
            .collect()
    }

    /// The recoverable windows, oldest first, overlapping ones merged: from
    /// a backup's end to the newest transaction end of its chain. A chain
    /// whose WAL could not be read, or that holds no transaction end after
    /// the backup, gives no window.
    pub fn windows(&self) -> Vec<Window> {
        let mut raw: Vec<Window> = Vec::new();
        for (b, _, end) in self.chains() {
            let (Some(start), Some(last)) = (
                b.end_time,
                self.chain_end(end).and_then(|c| c.last_xact_end),
            ) else {
                continue;
            };
            if last < start {
                continue; // nothing committed after the backup: no time to stop at
            }
            raw.push(Window {
                start,
                end: last,
                backup: b.id.clone(),
            });
        }
        raw.sort_by_key(|w| w.start);
        let mut merged: Vec<Window> = Vec::new();
        for w in raw {
            match merged.last_mut() {
                Some(m) if w.start <= m.end => {
                    if w.end > m.end {
                        m.end = w.end;
                    }
                }
                _ => merged.push(w),
            }
        }
        merged
    }

    /// Checks a target time and names the base backup CNPG would use.
    pub fn check_target(&self, target: Timestamp) -> Result<TargetCheck, CatalogError> {
        let windows = self.usable_windows()?;
        let list = WindowList(windows.clone());
        let first = &windows[0];
        let last = &windows[windows.len() - 1];
        let Some(window) = windows.iter().find(|w| w.start <= target && target < w.end) else {
            let err = if target < first.start {
                TargetError::BeforeFirstBackup {
                    target,
                    first: first.start,
                    windows: list,
                }
            } else if target >= last.end {
                TargetError::AfterLastWal {
                    target,
                    end: last.end,
                    segment: self
                        .chain_ends
                        .iter()
                        .find(|c| c.last_xact_end == Some(last.end))
                        .and_then(|c| c.found_in.clone())
                        .unwrap_or_default(),
                    windows: list,
                }
            } else {
                let gap = self
                    .gaps()
                    .into_iter()
                    .rfind(|g| g.reach < target)
                    .unwrap_or(Gap {
                        after: "?".into(),
                        missing: 0,
                        first_missing: "?".into(),
                        reach: target,
                    });
                TargetError::InGap {
                    target,
                    after: gap.after,
                    first_missing: gap.first_missing,
                    missing: gap.missing,
                    reach: gap.reach,
                    windows: list,
                }
            };
            return Err(CatalogError::Target {
                location: self.location.clone(),
                source: Box::new(err),
            });
        };
        // The newest backup that ended before the target and whose own
        // chain of WAL reaches it: the one drgit pins.
        let backup = self
            .chains()
            .into_iter()
            .filter(|(b, _, end)| {
                b.end_time.is_some_and(|e| e <= target)
                    && self
                        .chain_end(*end)
                        .and_then(|c| c.last_xact_end)
                        .is_some_and(|last| target < last)
            })
            .max_by_key(|(b, _, _)| b.end_time)
            .map(|(b, _, _)| b.id.clone())
            .unwrap_or_else(|| window.backup.clone());
        Ok(TargetCheck {
            target,
            backup,
            window: window.clone(),
        })
    }

    /// The windows, or an error saying why there are none.
    pub fn usable_windows(&self) -> Result<Vec<Window>, CatalogError> {
        let unusable = |detail: String| CatalogError::Unusable {
            location: self.location.clone(),
            detail,
        };
        if self.backups.is_empty() {
            return Err(unusable(
                "no base backups (no `base/<id>/backup.info`)".into(),
            ));
        }
        if !self.backups.iter().any(|b| b.status == "DONE") {
            let states: Vec<String> = self
                .backups
                .iter()
                .map(|b| format!("{} {}", b.id, b.status))
                .collect();
            return Err(unusable(format!(
                "no base backup completed ({})",
                states.join(", ")
            )));
        }
        if self.segments.is_empty() {
            return Err(unusable("no archived WAL segments under `wals/`".into()));
        }
        let windows = self.windows();
        if windows.is_empty() {
            let unread: Vec<String> = self
                .chain_ends
                .iter()
                .filter_map(|c| c.error.as_ref().map(|e| format!("{}: {e}", c.segment)))
                .collect();
            return Err(unusable(if !unread.is_empty() {
                format!(
                    "the end of the archived WAL cannot be read, so no target time can be checked ({})",
                    unread.join("; ")
                )
            } else if self.chain_ends.is_empty() {
                "no base backup has its own WAL archived (every DONE backup misses segments between its begin_wal and end_wal)".into()
            } else {
                "no transaction was committed after the newest base backup's end, so there is no time to stop at; leave out --target-time to recover everything archived".into()
            }));
        }
        Ok(windows)
    }

    /// The newest point any recovery reaches (the end of the last window).
    pub fn latest(&self) -> Option<Timestamp> {
        self.windows().last().map(|w| w.end)
    }

    /// For a recovery to the end of the archived WAL: the newest DONE
    /// backup whose chain reaches the newest archived segment.
    pub fn newest_restorable(&self) -> Option<String> {
        let newest = self.segments.last()?.position;
        self.chains()
            .into_iter()
            .filter(|(_, _, end)| *end == newest)
            .max_by_key(|(b, _, _)| b.end_time)
            .map(|(b, _, _)| b.id.clone())
    }
}

/// One chain end being read, newest segment first.
struct EndRead {
    found: ChainEnd,
    /// The segment asked for.
    pos: u64,
    low: u64,
    /// The segment after `pos`, decompressed (a record may run into it).
    next: Option<Vec<u8>>,
    started: std::time::Instant,
    done: bool,
}

/// Reading one lineage, answer by answer, so that a reader of many
/// (`backups status`) can run them all in one crawl: `base/` and the
/// `wals/` level are listed first; each WAL folder is listed and each
/// `backup.info` read as soon as its listing names it, the newest folder
/// first, and the newest segment in it read at once (it is where the
/// newest chain ends, nearly always); when all of those are in, the
/// catalog is built and each chain's end is read from its last segment
/// (going back one segment at a time while none holds a transaction end).
pub struct LineageRead {
    location: String,
    prefix: String,
    server: String,
    objects: Vec<ObjectMeta>,
    infos: BTreeMap<String, Vec<u8>>,
    /// The newest WAL folder, and the newest segment read ahead from it.
    newest_folder: Option<String>,
    read_ahead: Option<String>,
    read_ahead_bytes: Option<Vec<u8>>,
    /// Requests asked and not yet answered.
    pending: usize,
    stage: Stage,
}

enum Stage {
    Listing,
    Ends(Catalog, Vec<EndRead>),
    Done(Result<Catalog, CatalogError>),
}

impl LineageRead {
    /// A read of `<prefix>` (ending in `<serverName>/`) in the store that
    /// `describe` names.
    pub fn new(describe: &str, prefix: &str, server: &str) -> LineageRead {
        LineageRead {
            location: format!("{describe}{prefix}"),
            prefix: prefix.to_string(),
            server: server.to_string(),
            objects: Vec::new(),
            infos: BTreeMap::new(),
            newest_folder: None,
            read_ahead: None,
            read_ahead_bytes: None,
            pending: 0,
            stage: Stage::Listing,
        }
    }

    /// The first requests: the `base/` listing and the `wals/` level.
    pub fn start(&mut self) -> Vec<Ask> {
        self.pending = 2;
        vec![
            Ask::List(format!("{}base/", self.prefix)),
            Ask::Level(format!("{}wals/", self.prefix)),
        ]
    }

    /// Takes the answer to one of its requests; returns what to ask next.
    pub fn take(&mut self, ask: Ask, answer: Answer) -> Vec<Ask> {
        self.pending = self.pending.saturating_sub(1);
        let mut next = Vec::new();
        match (&mut self.stage, ask, answer) {
            (Stage::Listing, Ask::List(prefix), Answer::Objects(objects)) => {
                let base = format!("{}base/", self.prefix);
                if prefix == base {
                    next.extend(
                        objects
                            .iter()
                            .filter(|o| {
                                o.key
                                    .strip_prefix(&base)
                                    .and_then(|r| r.split_once('/'))
                                    .is_some_and(|(_, file)| file == "backup.info")
                            })
                            .map(|o| Ask::Get(o.key.clone())),
                    );
                } else if self.newest_folder.as_ref() == Some(&prefix) {
                    // Names sort by timeline, then position: the greatest
                    // segment name is the newest segment.
                    self.read_ahead = objects
                        .iter()
                        .filter_map(|o| {
                            let file = o.key.rsplit('/').next()?;
                            (!file.contains(".partial") && !file.contains(".history"))
                                .then_some(())?;
                            parse_segment(file).map(|_| o.key.clone())
                        })
                        .max();
                    next.extend(self.read_ahead.clone().map(Ask::Get));
                }
                self.objects.extend(objects);
            }
            (Stage::Listing, Ask::Level(_), Answer::Level(mut dirs, objects)) => {
                self.objects.extend(objects);
                // The newest folder (the greatest timeline and log) first.
                dirs.sort_by(|a, b| b.cmp(a));
                self.newest_folder = dirs.first().cloned();
                next.extend(dirs.into_iter().map(Ask::List));
            }
            (Stage::Listing, Ask::Get(key), Answer::Bytes(bytes)) => {
                if self.read_ahead.as_ref() == Some(&key) {
                    self.read_ahead_bytes = Some(bytes);
                } else {
                    self.infos.insert(key, bytes);
                }
            }
            (Stage::Ends(catalog, reads), Ask::Get(key), Answer::Bytes(bytes)) => {
                if let Some(read) = reads
                    .iter_mut()
                    .find(|r| !r.done && catalog.segment_at(r.pos).is_some_and(|s| s.key == key))
                {
                    next.extend(catalog.step_end(read, &bytes));
                }
            }
            _ => {}
        }
        self.pending += next.len();
        if self.pending == 0 {
            next.extend(self.advance());
        }
        next
    }

    /// Everything asked is in: the next stage, and its first requests.
    fn advance(&mut self) -> Vec<Ask> {
        match std::mem::replace(&mut self.stage, Stage::Listing) {
            Stage::Listing => {
                let built = Catalog::build(
                    self.location.clone(),
                    &self.prefix,
                    &self.server,
                    &self.objects,
                    &self.infos,
                );
                self.objects = Vec::new();
                self.infos = BTreeMap::new();
                match built {
                    Ok(catalog) => {
                        let mut reads = catalog.chain_end_reads();
                        let ahead = self.read_ahead.take().zip(self.read_ahead_bytes.take());
                        let mut asks = Vec::new();
                        for read in &mut reads {
                            let Some(seg) = catalog.segment_at(read.pos) else {
                                continue;
                            };
                            match &ahead {
                                Some((key, bytes)) if *key == seg.key => {
                                    asks.extend(catalog.step_end(read, bytes))
                                }
                                _ => asks.push(Ask::Get(seg.key.clone())),
                            }
                        }
                        self.pending = asks.len();
                        self.stage = Stage::Ends(catalog, reads);
                        if asks.is_empty() {
                            self.advance();
                        }
                        asks
                    }
                    Err(e) => {
                        self.stage = Stage::Done(Err(e));
                        Vec::new()
                    }
                }
            }
            Stage::Ends(mut catalog, reads) => {
                catalog.chain_ends = reads.into_iter().map(|r| r.found).collect();
                self.stage = Stage::Done(Ok(catalog));
                Vec::new()
            }
            done @ Stage::Done(_) => {
                self.stage = done;
                Vec::new()
            }
        }
    }

    /// The catalog read (after the crawl has run out of requests).
    pub fn finish(mut self) -> Result<Catalog, CatalogError> {
        if !matches!(self.stage, Stage::Done(_)) {
            self.advance();
        }
        match self.stage {
            Stage::Done(result) => result,
            _ => Err(CatalogError::Unusable {
                location: self.location,
                detail: "the catalog read stopped before every request was answered".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_times() {
        let t = parse_python_time("2026-11-24 12:20:56.929850+00:00").unwrap();
        assert_eq!(t.to_string(), "2026-11-24T12:20:56.92985Z");
        assert!(parse_python_time("yesterday").is_none());
    }

    #[test]
    fn segment_names() {
        assert_eq!(
            parse_segment("00000002000000010000000A.gz"),
            Some((2, 1, 10))
        );
        assert_eq!(
            parse_segment("000000010000000000000002.00000028.backup.gz"),
            None
        );
        assert_eq!(parse_segment("00000002.history"), None);
    }
}
