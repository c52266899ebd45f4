//! A backup store in a local directory: a mirror of the bucket, one file per
//! object, keys as relative paths.

use std::path::{Path, PathBuf};

use jiff::Timestamp;

use super::{BackupStore, ObjectMeta, StoreError};

pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: PathBuf) -> LocalStore {
        LocalStore { root }
    }

    fn io(&self, path: &Path, source: std::io::Error) -> StoreError {
        if source.kind() == std::io::ErrorKind::NotFound {
            StoreError::Missing {
                location: path.display().to_string(),
            }
        } else {
            StoreError::Io {
                location: path.display().to_string(),
                source,
            }
        }
    }

    fn walk(
        &self,
        dir: &Path,
        key_prefix: &str,
        out: &mut Vec<ObjectMeta>,
    ) -> Result<(), StoreError> {
        let entries = std::fs::read_dir(dir).map_err(|e| self.io(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| self.io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let meta = entry.metadata().map_err(|e| self.io(&path, e))?;
            let key = format!("{key_prefix}{name}");
            if meta.is_dir() {
                self.walk(&path, &format!("{key}/"), out)?;
            } else if meta.is_file() {
                let modified = meta.modified().map_err(|e| self.io(&path, e))?;
                let last_modified = Timestamp::try_from(modified).unwrap_or(Timestamp::UNIX_EPOCH);
                out.push(ObjectMeta {
                    key,
                    size: meta.len(),
                    last_modified,
                    etag: None,
                });
            }
        }
        Ok(())
    }
}

impl BackupStore for LocalStore {
    fn describe(&self) -> String {
        format!("file://{}/", self.root.display())
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        if !self.root.is_dir() {
            return Err(StoreError::Missing {
                location: format!("the backup directory {}", self.root.display()),
            });
        }
        // List the deepest directory the prefix names, then filter by prefix.
        let dir_part = prefix.rfind('/').map(|i| &prefix[..=i]).unwrap_or("");
        let dir = self.root.join(dir_part);
        let mut out = Vec::new();
        if dir.is_dir() {
            self.walk(&dir, dir_part, &mut out)?;
        }
        out.retain(|o| o.key.starts_with(prefix));
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn list_level(&self, prefix: &str) -> Result<(Vec<String>, Vec<ObjectMeta>), StoreError> {
        let dir = self.root.join(prefix);
        let mut dirs = Vec::new();
        let mut files = Vec::new();
        if !dir.is_dir() {
            return Ok((dirs, files));
        }
        for entry in std::fs::read_dir(&dir).map_err(|e| self.io(&dir, e))? {
            let entry = entry.map_err(|e| self.io(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata().map_err(|e| self.io(&entry.path(), e))?;
            if meta.is_dir() {
                dirs.push(format!("{prefix}{name}/"));
            } else if meta.is_file() {
                let modified = meta.modified().map_err(|e| self.io(&entry.path(), e))?;
                files.push(ObjectMeta {
                    key: format!("{prefix}{name}"),
                    size: meta.len(),
                    last_modified: Timestamp::try_from(modified).unwrap_or(Timestamp::UNIX_EPOCH),
                    etag: None,
                });
            }
        }
        dirs.sort();
        files.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((dirs, files))
    }

    fn get_head(&self, key: &str, len: u64) -> Result<Vec<u8>, StoreError> {
        use std::io::Read;
        let path = self.root.join(key);
        let file = std::fs::File::open(&path).map_err(|e| self.io(&path, e))?;
        let mut out = Vec::new();
        file.take(len)
            .read_to_end(&mut out)
            .map_err(|e| self.io(&path, e))?;
        Ok(out)
    }

    fn stat(&self, key: &str) -> Result<(u64, Option<String>), StoreError> {
        let path = self.root.join(key);
        let meta = std::fs::metadata(&path).map_err(|e| self.io(&path, e))?;
        Ok((meta.len(), None))
    }

    fn fetch_parts(
        &self,
        key: &str,
        file: &std::fs::File,
        ranges: &[std::ops::Range<u64>],
        _parallel: usize,
        done: &(dyn Fn(usize, u64) + Sync),
    ) -> Result<(), StoreError> {
        use std::io::{Read, Seek, SeekFrom};
        use std::os::unix::fs::FileExt;
        let path = self.root.join(key);
        let mut src = std::fs::File::open(&path).map_err(|e| self.io(&path, e))?;
        let mut buf = vec![0u8; 1 << 16];
        for (i, r) in ranges.iter().enumerate() {
            src.seek(SeekFrom::Start(r.start))
                .map_err(|e| self.io(&path, e))?;
            let mut at = r.start;
            while at < r.end {
                let want = ((r.end - at) as usize).min(buf.len());
                let n = src.read(&mut buf[..want]).map_err(|e| self.io(&path, e))?;
                if n == 0 {
                    return Err(StoreError::Truncated {
                        location: path.display().to_string(),
                        expected: r.end,
                        got: at,
                    });
                }
                file.write_all_at(&buf[..n], at)
                    .map_err(|e| StoreError::Io {
                        location: "the download file".into(),
                        source: e,
                    })?;
                at += n as u64;
            }
            done(i, r.end - r.start);
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.root.join(key);
        std::fs::read(&path).map_err(|e| self.io(&path, e))
    }
}
