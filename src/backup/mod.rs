//! The off-site backup store and the catalogs read from it.
//!
//! [`BackupStore`] is what every backup reader needs from a bucket: list the
//! objects under a prefix (with size and LastModified) and read one. The
//! local-directory store mirrors a bucket on disk and reports a file's
//! modification time as its LastModified, like S3 does.

pub mod barman;
pub mod local;

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
        "the backup store {url} is on S3, which this build of drgit cannot read yet; mirror the bucket to a directory (for example `rclone sync` or `aws s3 sync`) and pass `--backup-url file:///that/dir`"
    )]
    S3NotSupported { url: String },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// A bucket, or a directory laid out like one.
pub trait BackupStore {
    /// A human description: `file:///…` or `s3://bucket/prefix/`.
    fn describe(&self) -> String;
    /// Every object whose key starts with `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;
    /// The whole content of one object.
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError>;
}

/// Opens the store a backup URL names (`base` resolves relative paths).
pub fn open(url: &str, base: &Path) -> Result<Box<dyn BackupStore>, StoreError> {
    match parse_store_url(url, base)? {
        StoreUrl::Local(dir) => Ok(Box::new(local::LocalStore::new(
            dir.canonicalize().unwrap_or(dir),
        ))),
        StoreUrl::S3 { .. } => Err(StoreError::S3NotSupported {
            url: url.to_string(),
        }),
    }
}
