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
    /// Every object under each prefix; a store may list them concurrently.
    fn list_many(&self, prefixes: &[String]) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut out = Vec::new();
        for p in prefixes {
            out.extend(self.list(p)?);
        }
        Ok(out)
    }
    /// The whole content of one object.
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError>;
    /// The whole content of each object, in order; a store may read them
    /// concurrently (a round trip each is what costs, far from the bucket).
    fn get_many(&self, keys: &[String]) -> Result<Vec<Vec<u8>>, StoreError> {
        keys.iter().map(|k| self.get(k)).collect()
    }
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
}

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
        })?)),
    }
}
