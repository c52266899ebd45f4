//! Files that hold the cluster's secrets: backups and snapshots, copies of
//! etcd's data, journals. Each is created private, 0600 in directories
//! created 0700, whatever the umask: the mode is given at creation, so
//! there is no moment in which another user could open it.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Creates `dir` and its missing parents, each 0700 (existing ones are
/// left as they are).
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Creates (or truncates) `path` for writing, 0600 when created.
pub fn create_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Copies `from` to a new private file `to`; returns the bytes copied.
pub fn copy(from: &Path, to: &Path) -> io::Result<u64> {
    let mut src = File::open(from)?;
    let mut dst = create_file(to)?;
    io::copy(&mut src, &mut dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_whatever_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        create_file(&file).unwrap();
        let copied = dir.join("g");
        copy(&file, &copied).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&copied), 0o600);
    }
}
