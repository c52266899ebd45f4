//! The etcd snapshots and Kanidm backups in the store.
//!
//! etcd: `etcd/<YYYYMMDDTHHMMSSZ>.db`, written by `talosctl etcd snapshot`.
//! Kanidm: `kanidm/<timestamp>.backup` (or `.gz`): kanidmd's JSON backup
//! (`version`, `db_s_uuid`, `db_d_uuid`, `db_ts_max`, `keyhandles`,
//! `repl_meta`, `entries`), gzip-compressed by default since 1.8 whatever
//! the name says. Its `version` is read from the first bytes only (a ranged
//! read, decompressed as far as it goes), never by downloading it whole.

use jiff::Timestamp;
use serde::Serialize;

use super::{Answer, Ask, BackupStore, ObjectMeta, Request, StoreError};

/// A backup asked for by name that is not in the store.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no backup `{name}` in {location} (newest: {have})")]
    NoSuchBackup {
        name: String,
        location: String,
        have: String,
    },
}

/// The etcd snapshot or Kanidm backup `name` (its file name or key), or
/// the newest for `latest`.
pub fn find(
    store: &dyn BackupStore,
    kind: super::download::Kind,
    prefix: &str,
    name: &str,
) -> Result<Item, LookupError> {
    let items = match kind {
        super::download::Kind::Kanidm => kanidm_backups(store, prefix)?,
        _ => etcd_snapshots(store, prefix)?,
    };
    let found = if name == "latest" {
        items.last()
    } else {
        items
            .iter()
            .find(|i| i.key == name || i.key.rsplit('/').next() == Some(name))
    };
    found.cloned().ok_or_else(|| LookupError::NoSuchBackup {
        name: name.to_string(),
        location: store.describe(),
        have: items
            .iter()
            .rev()
            .take(5)
            .map(|i| i.key.clone())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// One backup object of a simple kind.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub key: String,
    pub size: u64,
    /// From the name when it carries a timestamp, else LastModified.
    pub time: Timestamp,
    pub last_modified: Timestamp,
    /// As listed (S3), so that a download needs no HEAD first.
    #[serde(skip)]
    pub etag: Option<String>,
    /// Kanidm only: the server version that wrote it, and whether it is gzip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gzip: Option<bool>,
    /// Kanidm only: `db_ts_max`, the newest change the backup holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_ts_max: Option<Timestamp>,
    /// Kanidm only: why the header could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// `20261126T030246Z` (or without `Z`) at the start of a file name.
pub fn time_from_name(key: &str) -> Option<Timestamp> {
    let name = key.rsplit('/').next()?;
    let stamp = name.get(..16)?;
    let with_z = if stamp.ends_with('Z') {
        stamp.to_string()
    } else {
        format!("{}Z", name.get(..15)?)
    };
    jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", &with_z)
        .ok()?
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

fn item(o: ObjectMeta) -> Item {
    Item {
        time: time_from_name(&o.key).unwrap_or(o.last_modified),
        key: o.key,
        size: o.size,
        last_modified: o.last_modified,
        etag: o.etag,
        version: None,
        gzip: None,
        db_ts_max: None,
        problem: None,
    }
}

/// etcd snapshots under `prefix`, oldest first.
pub fn etcd_snapshots(store: &dyn BackupStore, prefix: &str) -> Result<Vec<Item>, StoreError> {
    Ok(etcd_items(store.list(prefix)?))
}

/// The etcd snapshots among listed objects, oldest first.
pub fn etcd_items(objects: Vec<ObjectMeta>) -> Vec<Item> {
    let mut items: Vec<Item> = objects
        .into_iter()
        .filter(|o| o.key.ends_with(".db"))
        .map(item)
        .collect();
    items.sort_by_key(|i| i.time);
    items
}

/// How many bytes of a Kanidm backup are read for its header.
const HEADER_BYTES: u64 = 64 * 1024;

/// Kanidm backups under `prefix`, oldest first, with their versions.
pub fn kanidm_backups(store: &dyn BackupStore, prefix: &str) -> Result<Vec<Item>, StoreError> {
    let mut read = KanidmRead::default();
    let tag = |asks: Vec<Ask>| asks.into_iter().map(|a| Request::new(0, a)).collect();
    store.crawl(tag(vec![KanidmRead::start(prefix)]), &mut |r, answer| {
        tag(read.take(r.ask, answer))
    })?;
    Ok(read.finish())
}

/// Reading the Kanidm backups answer by answer: the listing, then every
/// backup's header at once (a ranged read each).
#[derive(Default)]
pub struct KanidmRead {
    items: Vec<Item>,
}

impl KanidmRead {
    /// The first request: the listing of `prefix`.
    pub fn start(prefix: &str) -> Ask {
        Ask::List(prefix.to_string())
    }

    /// Takes the answer to one of its requests; returns what to ask next.
    pub fn take(&mut self, ask: Ask, answer: Answer) -> Vec<Ask> {
        match (ask, answer) {
            (Ask::List(_), Answer::Objects(objects)) => {
                self.items = objects.into_iter().map(item).collect();
                self.items
                    .iter()
                    .map(|i| Ask::Head(i.key.clone(), HEADER_BYTES))
                    .collect()
            }
            (Ask::Head(key, _), Answer::Bytes(head)) => {
                if let Some(i) = self.items.iter_mut().find(|i| i.key == key) {
                    let (gzip, version) = kanidm_header(&head);
                    i.gzip = Some(gzip);
                    i.db_ts_max = header_text(&head).and_then(|t| db_ts_max(&t));
                    match version {
                        Ok(v) => i.version = Some(v),
                        Err(p) => i.problem = Some(p),
                    }
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// The backups read, oldest first.
    pub fn finish(mut self) -> Vec<Item> {
        self.items.sort_by_key(|i| i.time);
        self.items
    }
}

/// The first bytes of a Kanidm backup as text, decompressed as far as they go.
fn header_text(head: &[u8]) -> Option<String> {
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    let bytes = if gzip {
        use std::io::Read;
        let mut out = Vec::new();
        let mut dec = flate2::read::GzDecoder::new(head);
        let mut buf = [0u8; 8192];
        while let Ok(n) = dec.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    } else {
        head.to_vec()
    };
    (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned())
}

/// Reads `version` from the first bytes of a Kanidm backup.
pub fn kanidm_header(head: &[u8]) -> (bool, Result<String, String>) {
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    let Some(text) = header_text(head) else {
        return (
            gzip,
            Err(if gzip {
                "gzip data that does not decompress"
            } else {
                "an empty file"
            }
            .into()),
        );
    };
    if !text.trim_start().starts_with('{') {
        return (gzip, Err("not a kanidmd JSON backup".into()));
    }
    match json_string_field(&text, "version") {
        Some(v) => (gzip, Ok(v)),
        None => (gzip, Err("no `version` in the backup's header".into())),
    }
}

/// `db_ts_max`: a serde `std::time::Duration` since the Unix epoch,
/// `{"secs": …, "nanos": …}` (kanidm server/lib/src/be/dbentry.rs,
/// `DbBackup::V5`), not a string. None when it is anything else.
pub fn db_ts_max(text: &str) -> Option<Timestamp> {
    let at = text.find("\"db_ts_max\"")? + "\"db_ts_max\"".len();
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
    let object = &rest[..rest.find('}')? + 1];
    #[derive(serde::Deserialize)]
    struct Duration {
        secs: i64,
        nanos: i32,
    }
    let d: Duration = serde_json::from_str(object).ok()?;
    Timestamp::new(d.secs, d.nanos).ok()
}

/// Whether kanidmd of `image` (`docker.io/kanidm/server:1.9.1`) can restore
/// a backup written by `version` ("1.9"): the backup's `version` is the
/// writer's `major.minor` series and restore refuses another
/// (server/lib/src/be/mod.rs, `DB0001MismatchedRestoreVersion`). Err says
/// why not.
pub fn restore_image_matches(version: &str, image: &str) -> Result<(), String> {
    let series = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
    let name = image.split('@').next().unwrap_or_default();
    let tag = name
        .rsplit_once(':')
        .map(|(_, t)| t)
        .filter(|t| !t.contains('/'))
        .unwrap_or_default()
        .trim_start_matches('v');
    if tag.is_empty() || !tag.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "the restore image {image} has no version tag, so its kanidmd series cannot be checked against the backup's {version}"
        ));
    }
    if series(tag) != series(version) {
        return Err(format!(
            "the backup was written by kanidmd {version}, but the restore image is {image} ({tag}); kanidmd restores only backups of its own major.minor"
        ));
    }
    Ok(())
}

/// The file name a backup gets where kanidmd reads it: kanidmd restore
/// decides gzip by the name alone (`BackupCompression::identify_file`:
/// `.gz` suffix, proto/src/backup.rs), so gzip data gets `.gz` and plain
/// JSON loses it.
pub fn restore_file_name(key: &str, gzip: bool) -> String {
    let name = key.rsplit('/').next().unwrap_or(key);
    match (gzip, name.strip_suffix(".gz")) {
        (true, Some(_)) => name.to_string(),
        (true, None) => format!("{name}.gz"),
        (false, Some(stem)) => stem.to_string(),
        (false, None) => name.to_string(),
    }
}

/// The value of a top-level string field, found by scanning (the document
/// may be cut short).
fn json_string_field(text: &str, field: &str) -> Option<String> {
    let needle = format!("\"{field}\"");
    let at = text.find(&needle)? + needle.len();
    let rest = text[at..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(rest[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_times() {
        assert_eq!(
            time_from_name("etcd/20261126T030246Z.db")
                .unwrap()
                .to_string(),
            "2026-11-26T03:02:46Z"
        );
        assert_eq!(
            time_from_name("kanidm/20261126T030246.backup")
                .unwrap()
                .to_string(),
            "2026-11-26T03:02:46Z"
        );
        assert!(time_from_name("etcd/latest.db").is_none());
    }

    #[test]
    fn kanidm_versions_plain_and_gzip_even_cut_short() {
        let json = br#"{"version":"1.9","db_s_uuid":"a","entries":[1,2,3]}"#;
        assert_eq!(kanidm_header(json), (false, Ok("1.9".to_string())));
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut enc, br#"{"version": "1.8", "entries": ["#).unwrap();
        std::io::Write::write_all(&mut enc, &vec![b'1'; 200_000]).unwrap();
        let gz = enc.finish().unwrap();
        let (gzip, v) = kanidm_header(&gz[..gz.len() / 2]);
        assert!(gzip);
        assert_eq!(v, Ok("1.8".to_string()));
        assert!(kanidm_header(b"garbage").1.is_err());
    }

    #[test]
    fn the_restore_image_must_be_of_the_backups_series() {
        assert!(restore_image_matches("1.9", "docker.io/kanidm/server:1.9.1").is_ok());
        assert!(restore_image_matches("1.9", "kanidm/server:v1.9.4@sha256:ab").is_ok());
        let e = restore_image_matches("1.8", "docker.io/kanidm/server:1.9.1").unwrap_err();
        assert!(e.contains("kanidmd 1.8") && e.contains("1.9.1"), "{e}");
        assert!(restore_image_matches("1.9", "kanidm/server:latest").is_err());
        assert!(restore_image_matches("1.9", "kanidm/server").is_err());
    }

    #[test]
    fn gzip_backups_are_named_gz_where_kanidmd_reads_them() {
        assert_eq!(
            restore_file_name("kanidm/20261126T030246Z.backup", true),
            "20261126T030246Z.backup.gz"
        );
        assert_eq!(
            restore_file_name("kanidm/backup-x.json.gz", true),
            "backup-x.json.gz"
        );
        assert_eq!(
            restore_file_name("kanidm/backup-x.json.gz", false),
            "backup-x.json"
        );
        assert_eq!(restore_file_name("backup-x.json", false), "backup-x.json");
    }

    #[test]
    fn db_ts_max_is_a_serde_duration() {
        let t = db_ts_max(
            r#"{"version":"1.9","db_ts_max": {"secs": 1795662166, "nanos": 250000000}, "entries": []}"#,
        );
        assert_eq!(t.unwrap().to_string(), "2026-11-26T03:02:46.25Z");
        assert_eq!(
            db_ts_max(r#"{"db_ts_max":{"nanos":0,"secs":0}}"#)
                .unwrap()
                .as_second(),
            0
        );
        // A string is not what kanidmd writes.
        assert!(db_ts_max(r#"{"db_ts_max": "00000000-0000"}"#).is_none());
        assert!(
            db_ts_max(r#"{"db_ts_max": {"secs": 1"#).is_none(),
            "cut short"
        );
    }
}
