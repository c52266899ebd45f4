//! Integrity checks of downloaded backups, without the tools that wrote
//! them.
//!
//! etcd snapshot (`etcdctl snapshot save`): a bbolt database whose size is
//! a multiple of 512 plus 32, the last 32 bytes the SHA-256 of the rest; two
//! bbolt meta pages (at 0 and at one page size), each with magic
//! 0xED0CDAED at offset 16, version 2 at 20, the page size at 24, and the
//! FNV-1a 64 checksum of bytes 16..72 stored at 72.
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

/// Verifies a copy of etcd's data dir database (`member/snap/db`): no hash
/// trailer, only the bbolt meta pages.
pub fn etcd_db_file(path: &Path) -> Result<(), Corrupt> {
    let mut f = std::fs::File::open(path).map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    let mut first = vec![0u8; 80];
    f.read_exact(&mut first)
        .map_err(|_| Corrupt::EtcdSize { size })?;
    let page_size = check_meta(0, &first)?;
    if !(512..=1 << 20).contains(&page_size) || size % page_size as u64 != 0 {
        return Err(Corrupt::EtcdMeta {
            page: 0,
            detail: format!("page size {page_size} for a file of {size} bytes"),
        });
    }
    let mut second = vec![0u8; 80];
    f.seek(SeekFrom::Start(page_size as u64)).map_err(io)?;
    f.read_exact(&mut second).map_err(io)?;
    check_meta(1, &second)?;
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
    let mut first = Vec::with_capacity(80);
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = f.read(&mut buf[..want]).map_err(io)?;
        if n == 0 {
            return Err(Corrupt::EtcdSize { size });
        }
        if first.len() < 80 {
            first.extend_from_slice(&buf[..n.min(80 - first.len())]);
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    let mut trailer = [0u8; 32];
    f.read_exact(&mut trailer).map_err(io)?;
    if hasher.finalize()[..] != trailer[..] {
        return Err(Corrupt::EtcdHash);
    }
    let page_size = check_meta(0, &first)?;
    if !(512..=1 << 20).contains(&page_size) || page_size as u64 + 80 > size {
        return Err(Corrupt::EtcdMeta {
            page: 0,
            detail: format!("page size {page_size}"),
        });
    }
    let mut second = vec![0u8; 80];
    f.seek(SeekFrom::Start(page_size as u64)).map_err(io)?;
    f.read_exact(&mut second).map_err(io)?;
    check_meta(1, &second)?;
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
