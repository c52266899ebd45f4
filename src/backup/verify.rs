//! Integrity checks of downloaded backups, without the tools that wrote
//! them.
//!
//! etcd snapshot (`etcdctl snapshot save`): a bbolt database whose size is
//! a multiple of 512 plus 32, the last 32 bytes the SHA-256 of the rest; two
//! bbolt meta pages (at 0 and at one page size), each with magic
//! 0xED0CDAED at offset 16, version 2 at 20, the page size at 24, and the
//! FNV-1a 64 checksum of bytes 16..72 stored at 72. One valid meta page is
//! enough, as it is for bbolt (v1.4.2 db.go: "We only return an error if
//! both meta pages fail validation"): a copy of a live data dir may catch
//! the other mid-write.
//!
//! Kanidm backup: gzip (by its magic, whatever the name) around one JSON
//! document with a `version`; both are checked by streaming through it.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Why a file is not what it should be.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Corrupt {
    #[error(
        "size {size} is not a multiple of 512 plus the 32-byte SHA-256 trailer: the snapshot is truncated or padded"
    )]
    EtcdSize { size: u64 },
    #[error("the SHA-256 trailer does not match the content: the snapshot is corrupt")]
    EtcdHash,
    #[error("bbolt meta page {page}: {detail}")]
    EtcdMeta { page: u8, detail: String },
    #[error("its pages are not consistent, as bbolt checks them: {0}")]
    EtcdPages(String),
    #[error("not valid gzip: {0}")]
    Gzip(String),
    #[error("not a kanidmd JSON backup: {0}")]
    KanidmJson(String),
    #[error("{got} bytes, but the store said {expected}")]
    Length { expected: u64, got: u64 },
    #[error("MD5 {got} does not match the object's ETag {expected}")]
    Md5 { expected: String, got: String },
    #[error("cannot read it: {0}")]
    Io(String),
}

fn io(e: std::io::Error) -> Corrupt {
    Corrupt::Io(e.to_string())
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn check_meta(page: u8, m: &[u8]) -> Result<u32, Corrupt> {
    let u32_at = |o: usize| u32::from_le_bytes(m[o..o + 4].try_into().unwrap_or_default());
    let bad = |detail: String| Corrupt::EtcdMeta { page, detail };
    if m.len() < 80 {
        return Err(bad("missing".into()));
    }
    if u32_at(16) != 0xED0C_DAED {
        return Err(bad(format!(
            "magic {:#010x}, expected 0xed0cdaed",
            u32_at(16)
        )));
    }
    if u32_at(20) != 2 {
        return Err(bad(format!("version {}, expected 2", u32_at(20))));
    }
    let stored = u64::from_le_bytes(m[72..80].try_into().unwrap_or_default());
    if fnv1a64(&m[16..72]) != stored {
        return Err(bad("checksum mismatch".into()));
    }
    Ok(u32_at(24))
}

/// The SHA-256 of a file, in hex (read in 64 KiB pieces).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Where meta page 1 is looked for when meta page 0 cannot say the page
/// size: every power of two from 1 KiB to 16 MiB, as bbolt v1.4.2 db.go
/// `getPageSizeFromSecondMeta` does.
const PAGE_SIZES: [u64; 15] = [
    1 << 10,
    1 << 11,
    1 << 12,
    1 << 13,
    1 << 14,
    1 << 15,
    1 << 16,
    1 << 17,
    1 << 18,
    1 << 19,
    1 << 20,
    1 << 21,
    1 << 22,
    1 << 23,
    1 << 24,
];

/// The meta page bbolt opens a database with: the valid one with the
/// higher txid (bbolt v1.4.2 db.go `meta()`); page 1 sits at page 0's page
/// size, or, with page 0 invalid, at one of [`PAGE_SIZES`]. `read_at`
/// reads 80 bytes at an offset. Errors only when neither page is valid.
pub(crate) fn bbolt_meta(
    read_at: &mut dyn FnMut(u64) -> std::io::Result<[u8; 80]>,
) -> Result<[u8; 80], Corrupt> {
    let first = read_at(0).map_err(io);
    let zero = first.clone().and_then(|m| check_meta(0, &m).map(|_| m));
    let sizes: Vec<u64> = match &zero {
        Ok(m) => vec![u64::from(u32::from_le_bytes(
            m[24..28].try_into().unwrap_or_default(),
        ))],
        Err(_) => PAGE_SIZES.to_vec(),
    };
    let mut one_err = None;
    let one = sizes.iter().find_map(|&ps| {
        match read_at(ps)
            .map_err(io)
            .and_then(|m| check_meta(1, &m).map(|_| m))
        {
            Ok(m) => Some(m),
            Err(e) => {
                one_err.get_or_insert(e);
                None
            }
        }
    });
    let txid = |m: &[u8; 80]| u64::from_le_bytes(m[64..72].try_into().unwrap_or_default());
    match (zero, one) {
        (Ok(a), Some(b)) => Ok(if txid(&b) > txid(&a) { b } else { a }),
        (Ok(a), None) => Ok(a),
        (Err(_), Some(b)) => Ok(b),
        (Err(e), None) => Err(match one_err {
            Some(Corrupt::EtcdMeta { detail, .. }) => match e {
                Corrupt::EtcdMeta { detail: d0, .. } => Corrupt::EtcdMeta {
                    page: 0,
                    detail: format!("{d0}; and meta page 1: {detail}"),
                },
                other => other,
            },
            _ => e,
        }),
    }
}

/// The page size of a meta page [`bbolt_meta`] chose.
fn page_size(m: &[u8; 80]) -> u64 {
    u64::from(u32::from_le_bytes(m[24..28].try_into().unwrap_or_default()))
}

fn file_reader(f: &mut std::fs::File) -> impl FnMut(u64) -> std::io::Result<[u8; 80]> + '_ {
    move |at| {
        let mut m = [0u8; 80];
        f.seek(SeekFrom::Start(at))?;
        f.read_exact(&mut m)?;
        Ok(m)
    }
}

/// Verifies a copy of etcd's data dir database (`member/snap/db`): no hash
/// trailer; a valid meta page and a size of whole pages.
pub fn etcd_db_file(path: &Path) -> Result<(), Corrupt> {
    let mut f = std::fs::File::open(path).map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    if size < 80 {
        return Err(Corrupt::EtcdSize { size });
    }
    let meta = bbolt_meta(&mut file_reader(&mut f))?;
    let ps = page_size(&meta);
    if !(512..=1 << 20).contains(&ps) || size % ps != 0 {
        return Err(Corrupt::EtcdMeta {
            page: 0,
            detail: format!("page size {ps} for a file of {size} bytes"),
        });
    }
    Ok(())
}

/// Verifies an etcd snapshot file.
pub fn etcd_snapshot(path: &Path) -> Result<(), Corrupt> {
    let mut f = std::fs::File::open(path).map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    if size < 512 + 32 || size % 512 != 32 {
        return Err(Corrupt::EtcdSize { size });
    }
    let mut hasher = Sha256::new();
    let mut left = size - 32;
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = f.read(&mut buf[..want]).map_err(io)?;
        if n == 0 {
            return Err(Corrupt::EtcdSize { size });
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    let mut trailer = [0u8; 32];
    f.read_exact(&mut trailer).map_err(io)?;
    if hasher.finalize()[..] != trailer[..] {
        return Err(Corrupt::EtcdHash);
    }
    let meta = bbolt_meta(&mut file_reader(&mut f))?;
    let ps = page_size(&meta);
    if !(512..=1 << 20).contains(&ps) || ps + 80 > size {
        return Err(Corrupt::EtcdMeta {
            page: 0,
            detail: format!("page size {ps}"),
        });
    }
    Ok(())
}

/// Verifies a Kanidm backup file; returns its `version` and whether it is gzip.
pub fn kanidm_backup(path: &Path) -> Result<(String, bool), Corrupt> {
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut magic = [0u8; 2];
    let gzip = f.read(&mut magic).map_err(io)? == 2 && magic == [0x1f, 0x8b];
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    let reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)))
    } else {
        Box::new(std::io::BufReader::new(f))
    };
    #[derive(serde::Deserialize)]
    struct Header {
        version: String,
        #[allow(dead_code)]
        entries: serde::de::IgnoredAny,
    }
    let header: Header = serde_json::from_reader(reader).map_err(|e| {
        let msg = e.to_string();
        if gzip && (msg.contains("invalid") && msg.contains("gzip") || e.is_io()) {
            Corrupt::Gzip(msg)
        } else {
            Corrupt::KanidmJson(msg)
        }
    })?;
    Ok((header.version, gzip))
}

/// The MD5 of a file, hex.
pub fn md5_hex(path: &Path) -> Result<String, Corrupt> {
    use md5::Md5;
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_reference() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    }
}
