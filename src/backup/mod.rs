//! The off-site backup store and the catalogs read from it.
//!
//! [`BackupStore`] is what every backup reader needs from a bucket: list the
//! objects under a prefix (with size and LastModified) and read one. The
//! local-directory store mirrors a bucket on disk and reports a file's
//! modification time as its LastModified, like S3 does.

pub mod barman;
pub mod bbolt;
pub mod download;
pub mod kinds;
pub mod local;
pub mod s3;
pub mod verify;
pub mod wal;

use std::path::Path;

use jiff::Timestamp;

use crate::config::{StoreUrl, parse_store_url};

/// One object in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectMeta {
    /// The key relative to the store's root, `/`-separated.
    pub key: String,
    pub size: u64,
    pub last_modified: Timestamp,
    /// As the listing gives it (S3), without quotes; None on a local store.
    pub etag: Option<String>,
}

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{location} does not exist")]
    Missing { location: String },
    #[error("cannot read {location}: {source}")]
    Io {
        location: String,
        source: std::io::Error,
    },
    #[error(
        "{location}: access denied ({code}); check the access key and secret (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and that they may list and read the bucket"
    )]
    AccessDenied { location: String, code: String },
    #[error(
        "bucket `{bucket}` does not exist at {endpoint}; check `[backup] url` and `[backup] endpoint`"
    )]
    NoSuchBucket { bucket: String, endpoint: String },
    #[error(
        "cannot reach the S3 endpoint {endpoint} ({detail}); check `[backup] endpoint` and the network"
    )]
    Unreachable { endpoint: String, detail: String },
    #[error("{location}: {detail}")]
    S3 { location: String, detail: String },
    #[error("{location}: the object was cut short ({got} of {expected} bytes)")]
    Truncated {
        location: String,
        expected: u64,
        got: u64,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// A bucket, or a directory laid out like one.
pub trait BackupStore {
    /// A human description: `file:///…` or `s3://bucket/prefix/`.
    fn describe(&self) -> String;
    /// Every object whose key starts with `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;
    /// One level below `prefix` (ending in `/`): the "folders" (as keys
    /// ending in `/`) and the objects directly in it.
    fn list_level(&self, prefix: &str) -> Result<(Vec<String>, Vec<ObjectMeta>), StoreError>;
    /// The whole content of one object.
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError>;
    /// Up to `len` bytes of an object from its start (a ranged read).
    fn get_head(&self, key: &str, len: u64) -> Result<Vec<u8>, StoreError>;
    /// An object's size and ETag.
    fn stat(&self, key: &str) -> Result<(u64, Option<String>), StoreError>;
    /// Writes byte ranges of an object into `file` at their own offsets,
    /// up to `parallel` at a time; calls `done(index, bytes)` as each
    /// range is complete.
    fn fetch_parts(
        &self,
        key: &str,
        file: &std::fs::File,
        ranges: &[std::ops::Range<u64>],
        parallel: usize,
        done: &(dyn Fn(usize, u64) + Sync),
    ) -> Result<(), StoreError>;

    /// Answers `start`, then whatever `then` asks next from each answer,
    /// until nothing is left to ask; the first error stops it. A store far
    /// away runs every request that is not waiting for another at once, a
    /// bounded number at a time (a round trip each is what costs across
    /// an ocean); answers come in the order they arrive.
    fn crawl(&self, start: Vec<Request>, then: &mut Then<'_>) -> Result<(), StoreError> {
        let mut queue: std::collections::VecDeque<Request> = start.into();
        while let Some(r) = queue.pop_front() {
            let answer = match &r.ask {
                Ask::List(p) => Answer::Objects(self.list(p)?),
                Ask::Level(p) => {
                    let (dirs, objects) = self.list_level(p)?;
                    Answer::Level(dirs, objects)
                }
                Ask::Get(k) => Answer::Bytes(self.get(k)?),
                Ask::Head(k, len) => Answer::Bytes(self.get_head(k, *len)?),
            };
            queue.extend(then(r, answer));
        }
        Ok(())
    }
}

/// What one request asks of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Every object under a prefix ([`BackupStore::list`]).
    List(String),
    /// One level under a prefix ([`BackupStore::list_level`]).
    Level(String),
    /// A whole object ([`BackupStore::get`]).
    Get(String),
    /// The first bytes of an object ([`BackupStore::get_head`]).
    Head(String, u64),
}

/// One request in a [`BackupStore::crawl`]; `tag` tells its asker which
/// of its readers it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub ask: Ask,
    pub tag: usize,
}

impl Request {
    pub fn new(tag: usize, ask: Ask) -> Request {
        Request { ask, tag }
    }
}

/// The store's answer to one [`Ask`].
#[derive(Debug)]
pub enum Answer {
    Objects(Vec<ObjectMeta>),
    Level(Vec<String>, Vec<ObjectMeta>),
    Bytes(Vec<u8>),
}

/// What a crawl asks next after an answer.
pub type Then<'a> = dyn FnMut(Request, Answer) -> Vec<Request> + 'a;

/// Every object under each prefix, sorted by key; listed concurrently
/// where the store can.
pub fn list_many(
    store: &dyn BackupStore,
    prefixes: &[String],
) -> Result<Vec<ObjectMeta>, StoreError> {
    let start = prefixes
        .iter()
        .map(|p| Request::new(0, Ask::List(p.clone())))
        .collect();
    let mut out = Vec::new();
    store.crawl(start, &mut |_, answer| {
        if let Answer::Objects(o) = answer {
            out.extend(o);
        }
        Vec::new()
    })?;
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// The whole content of each object, in the order asked; read
/// concurrently where the store can.
pub fn get_many(store: &dyn BackupStore, keys: &[String]) -> Result<Vec<Vec<u8>>, StoreError> {
    let start = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Request::new(i, Ask::Get(k.clone())))
        .collect();
    let mut out = vec![Vec::new(); keys.len()];
    store.crawl(start, &mut |r, answer| {
        if let Answer::Bytes(b) = answer {
            out[r.tag] = b;
        }
        Vec::new()
    })?;
    Ok(out)
}

/// How many requests a store far away has in flight at once, unless
/// `[backup] parallel_requests` says otherwise: R2 and S3 serve many
/// more, and at a 100 ms round trip a catalog's ~130 requests then take
/// two or three rounds rather than eight.
pub const DEFAULT_PARALLEL_REQUESTS: usize = 64;

/// Opens the store a backup URL names (`base` resolves relative paths).
pub fn open(
    url: &str,
    base: &Path,
    cfg: &crate::config::Backup,
    credentials: Option<(String, String)>,
) -> Result<Box<dyn BackupStore>, StoreError> {
    match parse_store_url(url, base)? {
        StoreUrl::Local(dir) => Ok(Box::new(local::LocalStore::new(
            dir.canonicalize().unwrap_or(dir),
        ))),
        StoreUrl::S3 { bucket, prefix } => Ok(Box::new(s3::S3Store::new(&s3::S3Settings {
            bucket,
            prefix,
            endpoint: cfg.endpoint.clone(),
            region: cfg.region.clone(),
            path_style: cfg.path_style,
            credentials,
            parallel: cfg.parallel_requests,
        })?)),
    }
}
