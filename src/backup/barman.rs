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
//! target is archived. A missing segment is a gap; the reach of the chain
//! before it ends at the LastModified of the last segment before the gap
//! (a segment is archived only once it is complete, so its records are all
//! older than that). The newest segment's LastModified bounds the whole
//! window, which is the honest bound the object store offers.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use serde::Serialize;

use super::{BackupStore, ObjectMeta, StoreError};

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
}

/// One archived WAL segment.
#[derive(Debug, Clone, Serialize)]
pub struct WalSegment {
    pub name: String,
    pub timeline: u32,
    /// log * segments-per-log + segment: consecutive segments differ by one.
    pub position: u64,
    pub last_modified: Timestamp,
}

/// A stretch of time a recovery can reach.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
    /// The base backup the stretch starts from.
    pub backup: String,
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
    /// LastModified of the segment before the gap: recovery reaches no later.
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
        "target {target} is before the end of the first usable base backup ({first}); CNPG would fail with \"no target backup found\". Recoverable: {windows}"
    )]
    BeforeFirstBackup {
        target: Timestamp,
        first: Timestamp,
        windows: WindowList,
    },
    #[error(
        "target {target} is after the newest archived WAL ({end}); CNPG would fail with \"recovery ended before configured recovery target was reached\". Recoverable: {windows}"
    )]
    AfterLastWal {
        target: Timestamp,
        end: Timestamp,
        windows: WindowList,
    },
    #[error(
        "target {target} falls in a WAL gap: {missing} segment(s) from {first_missing} are missing after {after}, so recovery stops at {reach}. Pick a time inside: {windows}"
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
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|w| format!("{} → {} (from base backup {})", w.start, w.end, w.backup))
            .collect();
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
/// plain segment (24 hex digits, optional compression suffix).
fn parse_segment(file: &str) -> Option<(u32, u64, u64)> {
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
    /// Reads `<prefix>` (ending in `<serverName>/`) from the store.
    pub fn read(
        store: &dyn BackupStore,
        prefix: &str,
        server: &str,
    ) -> Result<Catalog, CatalogError> {
        let location = format!("{}{prefix}", store.describe());
        // Base backups are few; WAL folders (one per timeline and 4 GiB of
        // WAL) are listed concurrently where the store can.
        let mut objects = store.list(&format!("{prefix}base/"))?;
        let (wal_dirs, wal_root) = store.list_level(&format!("{prefix}wals/"))?;
        objects.extend(wal_root);
        objects.extend(store.list_many(&wal_dirs)?);
        if objects.is_empty() {
            return Err(CatalogError::Empty {
                location,
                server: server.to_string(),
            });
        }
        let base_prefix = format!("{prefix}base/");
        let wal_prefix = format!("{prefix}wals/");

        let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
        let mut infos: Vec<&ObjectMeta> = Vec::new();
        let mut wal: Vec<&ObjectMeta> = Vec::new();
        for o in &objects {
            if let Some(rest) = o.key.strip_prefix(&base_prefix) {
                if let Some((id, file)) = rest.split_once('/') {
                    *sizes.entry(id.to_string()).or_default() += o.size;
                    if file == "backup.info" {
                        infos.push(o);
                    }
                }
            } else if o.key.starts_with(&wal_prefix) {
                wal.push(o);
            }
        }

        let mut backups = Vec::new();
        let mut segment_size = DEFAULT_SEGMENT_SIZE;
        for info in infos {
            let bytes = store.get(&info.key)?;
            let text = String::from_utf8_lossy(&bytes);
            let kv = parse_backup_info(&info.key, &text)?;
            let id = info.key[base_prefix.len()..]
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
                                key: info.key.clone(),
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
        })
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
                reach: w[0].last_modified,
            })
            .collect()
    }

    /// The recoverable windows, oldest first, overlapping ones merged.
    pub fn windows(&self) -> Vec<Window> {
        let by_pos: BTreeMap<u64, &WalSegment> =
            self.segments.iter().map(|s| (s.position, s)).collect();
        let mut raw: Vec<Window> = Vec::new();
        for b in self.backups.iter().filter(|b| b.status == "DONE") {
            let (Some(end_time), Some(begin), Some(end)) = (
                b.end_time,
                b.begin_wal.as_deref().and_then(|w| self.position_of(w)),
                b.end_wal.as_deref().and_then(|w| self.position_of(w)),
            ) else {
                continue;
            };
            // Walk the chain from the backup's first segment.
            let mut pos = begin;
            let mut last = None;
            while let Some(seg) = by_pos.get(&pos) {
                last = Some(*seg);
                pos += 1;
            }
            let Some(last) = last else { continue };
            if last.position < end {
                continue; // the backup's own WAL is incomplete: not restorable
            }
            let reach = last.last_modified.max(end_time);
            raw.push(Window {
                start: end_time,
                end: reach,
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
        let Some(window) = windows
            .iter()
            .find(|w| w.start <= target && target <= w.end)
        else {
            let err = if target < first.start {
                TargetError::BeforeFirstBackup {
                    target,
                    first: first.start,
                    windows: list,
                }
            } else if target > last.end {
                TargetError::AfterLastWal {
                    target,
                    end: last.end,
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
        let backup = self
            .backups
            .iter()
            .filter(|b| b.status == "DONE" && b.end_time.is_some_and(|e| e <= target))
            .max_by_key(|b| b.end_time)
            .map(|b| b.id.clone())
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
            return Err(unusable(
                "no base backup has its own WAL archived (every DONE backup misses segments between its begin_wal and end_wal)".into(),
            ));
        }
        Ok(windows)
    }

    /// The newest point any recovery reaches (the end of the last window).
    pub fn latest(&self) -> Option<Timestamp> {
        self.windows().last().map(|w| w.end)
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
