//! Just enough of bbolt, etcd's storage file, to say what a snapshot holds:
//! its newest revision and how many revisions it keeps.
//!
//! Layout (etcd-io/bbolt page.go, node.go): pages of `page size` bytes,
//! each with a 16-byte header (id u64, flags u16, count u16, overflow u32);
//! pages 0 and 1 are meta pages (the valid one with the higher txid wins;
//! its root bucket's page id at byte 32); branch elements are 16 bytes
//! (pos, ksize, child page id), leaf elements 16 bytes (flags, pos, ksize,
//! vsize), `pos` counted from the element itself. A bucket's value is its
//! root page id and sequence; root 0 means an inline bucket whose page
//! follows those 16 bytes. etcd keeps every revision in bucket `key`,
//! keyed by 8-byte big-endian main revision, `_`, 8-byte sub revision
//! (server/storage/mvcc/revision.go): the last key is the newest revision.
//! Pages are read one at a time: memory stays bounded.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const BUCKET_LEAF: u32 = 0x01;

/// What a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// The newest main revision.
    pub revision: i64,
    /// How many revisions it keeps (keys of bucket `key`).
    pub revisions: u64,
}

struct Db {
    f: File,
    ps: u64,
    size: u64,
}

/// A page's bytes: a page on its own, or an inline bucket's.
type Page = Vec<u8>;

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or_default())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default())
}

impl Db {
    fn page(&self, id: u64) -> Result<Page, String> {
        let at = id
            .checked_mul(self.ps)
            .filter(|a| a + 16 <= self.size)
            .ok_or_else(|| format!("page {id} lies past the end of the file"))?;
        let mut head = [0u8; 16];
        self.f
            .read_exact_at(&mut head, at)
            .map_err(|e| e.to_string())?;
        let len = (1 + u32_at(&head, 12) as u64) * self.ps;
        if at + len > self.size || len > 64 << 20 {
            return Err(format!("page {id} overflows the file"));
        }
        let mut p = vec![0u8; len as usize];
        self.f
            .read_exact_at(&mut p, at)
            .map_err(|e| e.to_string())?;
        Ok(p)
    }

    /// The elements of a page: (key, value or child page id, is a bucket).
    fn elements(p: &[u8]) -> Result<Vec<(Vec<u8>, Elem)>, String> {
        let flags = u16_at(p, 8);
        let count = u16_at(p, 10) as usize;
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let e = 16 + i * 16;
            if e + 16 > p.len() {
                return Err("element past the page".into());
            }
            let slice = |from: usize, len: usize| {
                p.get(from..from + len)
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| "key past the page".to_string())
            };
            if flags & BRANCH != 0 {
                let (pos, ksize) = (u32_at(p, e) as usize, u32_at(p, e + 4) as usize);
                out.push((slice(e + pos, ksize)?, Elem::Child(u64_at(p, e + 8))));
            } else if flags & LEAF != 0 {
                let (fl, pos) = (u32_at(p, e), u32_at(p, e + 4) as usize);
                let (ksize, vsize) = (u32_at(p, e + 8) as usize, u32_at(p, e + 12) as usize);
                let key = slice(e + pos, ksize)?;
                let value = slice(e + pos + ksize, vsize)?;
                out.push((key, Elem::Value(value, fl & BUCKET_LEAF != 0)));
            } else {
                return Err(format!("page flags {flags:#x} where a tree page belongs"));
            }
        }
        Ok(out)
    }

    /// The root page of a bucket value (root id, or the inline page).
    fn bucket_root(&self, value: &[u8]) -> Result<Page, String> {
        if value.len() < 16 {
            return Err("bucket header cut short".into());
        }
        match u64_at(value, 0) {
            0 => Ok(value[16..].to_vec()),
            id => self.page(id),
        }
    }

    /// Finds bucket `name` in the tree rooted at `root`.
    fn find_bucket(&self, root: Page, name: &[u8], depth: u32) -> Result<Option<Page>, String> {
        if depth > 64 {
            return Err("tree too deep".into());
        }
        let elems = Self::elements(&root)?;
        if u16_at(&root, 8) & BRANCH != 0 {
            let child = elems
                .iter()
                .rev()
                .find(|(k, _)| k.as_slice() <= name)
                .or(elems.first());
            return match child {
                Some((_, Elem::Child(id))) => self.find_bucket(self.page(*id)?, name, depth + 1),
                _ => Ok(None),
            };
        }
        for (k, e) in elems {
            if let (true, Elem::Value(v, true)) = (k == name, &e) {
                return self.bucket_root(v).map(Some);
            }
        }
        Ok(None)
    }

    /// (last key, count of keys) under a tree page.
    fn walk(&self, p: Page, depth: u32) -> Result<(Option<Vec<u8>>, u64), String> {
        if depth > 64 {
            return Err("tree too deep".into());
        }
        let mut last = None;
        let mut count = 0;
        for (k, e) in Self::elements(&p)? {
            match e {
                Elem::Child(id) => {
                    let (l, c) = self.walk(self.page(id)?, depth + 1)?;
                    last = l.or(last);
                    count += c;
                }
                Elem::Value(..) => {
                    last = Some(k);
                    count += 1;
                }
            }
        }
        Ok((last, count))
    }
}

enum Elem {
    Child(u64),
    Value(Vec<u8>, bool),
}

/// What [`Db::check_tree`] has seen: the pages in use, and the high water
/// mark every page must lie below.
struct Seen {
    pages: std::collections::HashSet<u64>,
    high: u64,
}

impl Db {
    /// Every page of the tree rooted at page `id` (or inline `page`), and
    /// of each bucket under it, once: its header's id is its own, it lies
    /// below the high water mark, it is in use once only, and its keys
    /// ascend. A copy of a live file can break any of them (bbolt v1.4.2
    /// tx_check.go checks the same, and more).
    fn check_tree(&self, id: u64, page: Page, seen: &mut Seen, depth: u32) -> Result<(), String> {
        if depth > 64 {
            return Err("tree too deep".into());
        }
        if id != 0 {
            let overflow = u64::from(u32_at(&page, 12));
            if u64_at(&page, 0) != id {
                return Err(format!("page {id} says it is page {}", u64_at(&page, 0)));
            }
            for p in id..=id + overflow {
                if p >= seen.high {
                    return Err(format!(
                        "page {p} lies past the high water mark {}",
                        seen.high
                    ));
                }
                if !seen.pages.insert(p) {
                    return Err(format!("page {p} is used twice"));
                }
            }
        }
        let elems = Self::elements(&page)?;
        if elems.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(format!("page {id}: keys out of order"));
        }
        for (_, e) in elems {
            match e {
                Elem::Child(child) => {
                    self.check_tree(child, self.page(child)?, seen, depth + 1)?;
                }
                Elem::Value(v, true) => {
                    if v.len() < 16 {
                        return Err("bucket header cut short".into());
                    }
                    let root = u64_at(&v, 0);
                    self.check_tree(root, self.bucket_root(&v)?, seen, depth + 1)?;
                }
                Elem::Value(_, false) => {}
            }
        }
        Ok(())
    }
}

/// Opens the database as bbolt would: the meta page it would use.
fn open(path: &Path) -> Result<(Db, [u8; 80]), String> {
    let f = File::open(path).map_err(|e| e.to_string())?;
    let size = f.metadata().map_err(|e| e.to_string())?.len();
    // The meta page bbolt would open it with (one valid page is enough).
    let meta = super::verify::bbolt_meta(&mut |at| {
        let mut m = [0u8; 80];
        f.read_exact_at(&mut m, at).map(|_| m)
    })
    .map_err(|e| e.to_string())?;
    let ps = u32_at(&meta, 24) as u64;
    if !(512..=1 << 20).contains(&ps) {
        return Err(format!("page size {ps}"));
    }
    Ok((Db { f, ps, size }, meta))
}

/// Checks a copy of etcd's data dir database page by page (the tree of
/// every bucket, see [`Db::check_tree`]) and reads its newest revision. A
/// copy taken while etcd ran "might not be fully consistent" (talos
/// website/content/v1.11/advanced/disaster-recovery.md), and talosctl's
/// bootstrap refuses one that fails bbolt's check (etcdutl v3.6.4
/// snapshot/v3_snapshot.go `Status`: "snapshot file integrity check
/// failed"): better found before anything is wiped.
pub fn check(path: &Path) -> Result<Stats, String> {
    let (db, meta) = open(path)?;
    let pages = db.size / db.ps;
    let high = u64_at(&meta, 56);
    if high > pages {
        return Err(format!(
            "the meta page counts {high} pages, the file holds {pages}: the copy is cut short"
        ));
    }
    let mut seen = Seen {
        pages: std::collections::HashSet::new(),
        high,
    };
    let root = u64_at(&meta, 32);
    db.check_tree(root, db.page(root)?, &mut seen, 0)?;
    db.stats(&meta)
}

/// Reads a snapshot's (or data dir copy's) newest revision.
pub fn stats(path: &Path) -> Result<Stats, String> {
    let (db, meta) = open(path)?;
    db.stats(&meta)
}

impl Db {
    /// The newest revision and the count of revisions, from bucket `key`
    /// of the tree `meta` names.
    fn stats(&self, meta: &[u8; 80]) -> Result<Stats, String> {
        let root = self.page(u64_at(meta, 32))?;
        let key = self
            .find_bucket(root, b"key", 0)?
            .ok_or_else(|| "no bucket `key`: not an etcd database".to_string())?;
        let (last, revisions) = self.walk(key, 0)?;
        let revision = last
            .filter(|k| k.len() >= 8)
            .map(|k| i64::from_be_bytes(k[..8].try_into().unwrap_or_default()))
            .unwrap_or(0);
        Ok(Stats {
            revision,
            revisions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_snapshot_holds_revision_21() {
        // `etcdctl snapshot status` on this file says revision 21 (checked
        // again against the real etcdctl in tests/etcd.rs).
        let s = stats(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/backup-store/etcd/20261126T030246Z.db"
        )))
        .unwrap();
        assert_eq!(s.revision, 21);
        assert!(s.revisions >= 1 && s.revisions <= 21, "{s:?}");
    }

    #[test]
    fn a_real_data_dir_checks_and_a_torn_copy_does_not() {
        // A real etcd 3.4.23 data dir's database (fixtures/talos).
        let real = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/talos/member-snap-db"
        ));
        assert_eq!(check(real).unwrap().revision, 41);
        let dir = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(real).unwrap();
        // Cut short, as a copy of a file that grew meanwhile is.
        let p = dir.path().join("short.db");
        std::fs::write(&p, &bytes[..bytes.len() - 4096]).unwrap();
        assert!(
            check(&p).unwrap_err().contains("cut short"),
            "{:?}",
            check(&p)
        );
        // A page in use overwritten by another (a write caught half-way):
        // page 3 of the newest tree holds page 2's bytes.
        let mut torn = bytes.clone();
        let page2 = torn[2 * 4096..3 * 4096].to_vec();
        torn[3 * 4096..4 * 4096].copy_from_slice(&page2);
        let p = dir.path().join("torn.db");
        std::fs::write(&p, &torn).unwrap();
        assert_eq!(check(&p).unwrap_err(), "page 3 says it is page 2");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.db");
        std::fs::write(&p, vec![0xffu8; 8192]).unwrap();
        assert!(stats(&p).is_err());
        std::fs::write(&p, b"short").unwrap();
        assert!(stats(&p).is_err());
    }
}
