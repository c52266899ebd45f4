//! Verified, resumable downloads of single backups (an etcd snapshot, a
//! Kanidm backup) with bounded memory.
//!
//! The object is fetched in parts (ranged GETs, several at a time on S3),
//! each streamed into its place in `<dest>.drgit-part`; a small state file
//! beside it records the parts that are complete, so an interrupted
//! download resumes where it stopped (while the object's size and ETag are
//! unchanged). Only when the whole file checks out — its length, its MD5
//! against a single-part ETag, and the kind's own format check — is it
//! renamed to `<dest>`. Nothing partial ever carries the final name.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::verify::{self, Corrupt};
use super::{BackupStore, StoreError};

/// What kind of file is being fetched, for its format check.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Kind {
    Etcd,
    Kanidm,
    /// Any object: length and ETag only.
    Raw,
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "{key} failed verification ({check}): {source}. Nothing was kept; the object in the store may be damaged, pick another backup"
    )]
    Corrupt {
        key: String,
        check: &'static str,
        source: Corrupt,
    },
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Downloaded {
    pub key: String,
    pub path: PathBuf,
    pub size: u64,
    pub resumed_parts: usize,
    pub checks: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Part size and parallelism.
#[derive(Debug, Clone)]
pub struct Options {
    pub part_size: u64,
    pub parallel: usize,
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            part_size: 8 << 20,
            parallel: 4,
            progress: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct State {
    key: String,
    size: u64,
    etag: Option<String>,
    part_size: u64,
    done: Vec<bool>,
}

fn part_paths(dest: &Path) -> (PathBuf, PathBuf) {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (
        dest.with_file_name(format!("{name}.drgit-part")),
        dest.with_file_name(format!("{name}.drgit-part.json")),
    )
}

/// Downloads `key` to `dest`, verified; resumes an interrupted download.
pub fn download(
    store: &dyn BackupStore,
    key: &str,
    dest: &Path,
    kind: Kind,
    opts: &Options,
) -> Result<Downloaded, DownloadError> {
    let (size, etag) = store.stat(key)?;
    download_known(store, key, size, etag, dest, kind, opts)
}

/// Downloads a backup just listed: its size and ETag from the listing
/// (no HEAD first: a round trip less across the ocean), or from a HEAD
/// when the listing gave no ETag.
pub fn download_item(
    store: &dyn BackupStore,
    item: &super::kinds::Item,
    dest: &Path,
    kind: Kind,
    opts: &Options,
) -> Result<Downloaded, DownloadError> {
    match &item.etag {
        Some(etag) => download_known(
            store,
            &item.key,
            item.size,
            Some(etag.clone()),
            dest,
            kind,
            opts,
        ),
        None => download(store, &item.key, dest, kind, opts),
    }
}

/// Downloads `key` of `size` bytes and `etag` (as the store reports them).
fn download_known(
    store: &dyn BackupStore,
    key: &str,
    size: u64,
    etag: Option<String>,
    dest: &Path,
    kind: Kind,
    opts: &Options,
) -> Result<Downloaded, DownloadError> {
    let (part, state_path) = part_paths(dest);
    let ioerr = |path: &Path| {
        let path = path.display().to_string();
        move |source| DownloadError::Io { path, source }
    };
    let count = size.div_ceil(opts.part_size.max(1)).max(1) as usize;
    let fresh = State {
        key: key.to_string(),
        size,
        etag: etag.clone(),
        part_size: opts.part_size,
        done: vec![false; count],
    };
    let previous: Option<State> = std::fs::read_to_string(&state_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .filter(|s: &State| {
            s.key == fresh.key
                && s.size == size
                && s.etag == etag
                && s.part_size == opts.part_size
                && s.done.len() == count
        })
        .filter(|_| std::fs::metadata(&part).is_ok_and(|m| m.len() == size));
    let state = match previous {
        Some(s) => s,
        None => {
            let f = crate::private::create_file(&part).map_err(ioerr(&part))?;
            f.set_len(size).map_err(ioerr(&part))?;
            fresh
        }
    };
    let resumed_parts = state.done.iter().filter(|d| **d).count();
    let todo: Vec<(usize, Range<u64>)> = (0..count)
        .filter(|i| !state.done[*i])
        .map(|i| {
            let start = i as u64 * opts.part_size;
            (i, start..(start + opts.part_size).min(size))
        })
        .collect();

    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&part)
        .map_err(ioerr(&part))?;
    let bar = if opts.progress {
        let b = indicatif::ProgressBar::new(size);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b.set_message(key.to_string());
        b.set_position(resumed_parts as u64 * opts.part_size);
        Some(b)
    } else {
        None
    };
    let state = Mutex::new(state);
    let save = |s: &State| {
        let text = serde_json::to_string(s).unwrap_or_default();
        let _ = crate::manifest::write_atomic(&state_path, text.as_bytes());
    };
    save(&state.lock().unwrap_or_else(|e| e.into_inner()));
    let ranges: Vec<Range<u64>> = todo.iter().map(|(_, r)| r.clone()).collect();
    let result = store.fetch_parts(key, &file, &ranges, opts.parallel, &|j, bytes| {
        if let Some(b) = &bar {
            b.inc(bytes);
        }
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.done[todo[j].0] = true;
        save(&s);
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    result?;
    file.sync_all().map_err(ioerr(&part))?;
    drop(file);

    // Verify before the file gets its name; a corrupt one is not kept.
    let corrupt = |check: &'static str, source: Corrupt| {
        let _ = std::fs::remove_file(&part);
        let _ = std::fs::remove_file(&state_path);
        DownloadError::Corrupt {
            key: key.to_string(),
            check,
            source,
        }
    };
    let mut checks = Vec::new();
    let got = std::fs::metadata(&part).map_err(ioerr(&part))?.len();
    if got != size {
        return Err(corrupt(
            "length",
            Corrupt::Length {
                expected: size,
                got,
            },
        ));
    }
    checks.push(format!("length {size}"));
    if let Some(e) = etag
        .as_deref()
        .map(|e| e.trim_matches('"'))
        .filter(|e| e.len() == 32 && e.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        let md5 = verify::md5_hex(&part).map_err(|c| corrupt("md5", c))?;
        if md5 != e.to_ascii_lowercase() {
            return Err(corrupt(
                "md5",
                Corrupt::Md5 {
                    expected: e.to_string(),
                    got: md5,
                },
            ));
        }
        checks.push("MD5 = ETag".into());
    }
    let mut version = None;
    match kind {
        Kind::Etcd => {
            verify::etcd_snapshot(&part).map_err(|c| corrupt("etcd snapshot", c))?;
            checks.push("SHA-256 trailer".into());
            checks.push("bbolt meta pages".into());
        }
        Kind::Kanidm => {
            let (v, gzip) =
                verify::kanidm_backup(&part).map_err(|c| corrupt("kanidm backup", c))?;
            checks.push(format!("{}JSON backup", if gzip { "gzip " } else { "" }));
            version = Some(v);
        }
        Kind::Raw => {}
    }
    std::fs::rename(&part, dest).map_err(ioerr(dest))?;
    let _ = std::fs::remove_file(&state_path);
    Ok(Downloaded {
        key: key.to_string(),
        path: dest.to_path_buf(),
        size,
        resumed_parts,
        checks,
        version,
    })
}
