//! PostgreSQL WAL segments, read far enough to find transaction ends.
//!
//! A point-in-time recovery stops only at a transaction's commit or abort
//! record: PostgreSQL's `recoveryStopsBefore`/`recoveryStopsAfter`
//! (src/backend/access/transam/xlogrecovery.c) return early for every
//! record whose resource manager is not `RM_XACT_ID`. A target later than
//! the newest such record in the archive is never reached, and PostgreSQL
//! ends with "recovery ended before configured recovery target was
//! reached". The newest object's LastModified is no substitute: a segment
//! is archived when it fills or at `archive_timeout`, long after its last
//! commit. So the end of the recoverable window is read from the WAL.
//!
//! The layout (src/include/access/xlog_internal.h, xlogrecord.h, xact.h):
//! 8 KiB pages, each starting with a page header (`XLogPageHeaderData`:
//! magic, info, timeline, page address, then `xlp_rem_len` at byte 16; 24
//! bytes; the first page of a segment has the long form, 40 bytes);
//! records are 8-byte aligned, a 24-byte `XLogRecord` header then block
//! and data headers, and may cross page (and segment) boundaries, a page
//! then starting with the rest of the record (`XLP_FIRST_IS_CONTRECORD`,
//! `xlp_rem_len`). A record's main data comes last; for the transaction
//! manager's COMMIT (0x00), ABORT (0x20), COMMIT_PREPARED (0x30) and
//! ABORT_PREPARED (0x40) records (`info & 0x70`) it starts with `xact_time`,
//! microseconds since 2000-01-01 UTC. Every record's CRC-32C is checked; a
//! record that does not check out ends the scan, as it ends PostgreSQL's
//! own reading (it is stale data of a recycled segment, or the unused rest
//! of the segment after an `XLOG_SWITCH`). Checked against `pg_waldump` on
//! real segments in the tests.

use std::io::Read;

use jiff::Timestamp;
use serde::Serialize;

const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
const SHORT_PHD: usize = 24;
const LONG_PHD: usize = 40;
const RECORD_HEADER: usize = 24;
const RM_XLOG_ID: u8 = 0;
const RM_XACT_ID: u8 = 1;
const XLOG_SWITCH: u8 = 0x40;
const XLR_INFO_MASK: u8 = 0x0F;
const XLOG_XACT_OPMASK: u8 = 0x70;
/// The largest WAL segment PostgreSQL allows (`--wal-segsize` 1 GiB).
pub const MAX_SEGMENT: u64 = 1 << 30;
/// Seconds from the Unix epoch to PostgreSQL's epoch, 2000-01-01 UTC.
const PG_EPOCH_UNIX_SECS: i64 = 946_684_800;

/// The kind of a transaction-end record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum XactKind {
    Commit,
    Abort,
    CommitPrepared,
    AbortPrepared,
}

impl XactKind {
    fn from_info(info: u8) -> Option<XactKind> {
        match info & XLOG_XACT_OPMASK {
            0x00 => Some(XactKind::Commit),
            0x20 => Some(XactKind::Abort),
            0x30 => Some(XactKind::CommitPrepared),
            0x40 => Some(XactKind::AbortPrepared),
            _ => None,
        }
    }

    /// pg_waldump's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            XactKind::Commit => "COMMIT",
            XactKind::Abort => "ABORT",
            XactKind::CommitPrepared => "COMMIT_PREPARED",
            XactKind::AbortPrepared => "ABORT_PREPARED",
        }
    }
}

/// One commit or abort record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct XactEnd {
    /// Where the record starts.
    pub lsn: u64,
    pub xid: u32,
    pub kind: XactKind,
    pub time: Timestamp,
}

/// What one segment holds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SegmentScan {
    /// Records that start in this segment and are complete.
    pub records: usize,
    /// The commit and abort records among them, in WAL order.
    pub xact_ends: Vec<XactEnd>,
    /// The segment ends with an `XLOG_SWITCH` record.
    pub switched: bool,
}

impl SegmentScan {
    /// The newest transaction-end time in the segment.
    pub fn newest(&self) -> Option<Timestamp> {
        self.xact_ends.iter().map(|x| x.time).max()
    }
}

/// Why a segment could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{name}: not a WAL segment ({detail})")]
    NotWal { name: String, detail: String },
    #[error(
        "{name}: compressed with `{suffix}`, which drgit cannot read (it reads gzip, bzip2, snappy, zstd, lz4 and xz, as barman-cloud writes them)"
    )]
    Compression { name: String, suffix: String },
    #[error("{name}: cannot decompress ({source})")]
    Decompress {
        name: String,
        source: std::io::Error,
    },
}

/// Decompresses a segment as barman-cloud stored it, by its file suffix
/// (barman `barman/clients/cloud_walarchive.py`, release/3.17.0: one
/// suffix per compression; `barman/compression.py` the formats): none,
/// `.gz` (Python's gzip), `.bz2` (bz2), `.snappy` (python-snappy's framing
/// format), and since barman 3.12 `.zst` (one zstandard frame,
/// `ZstdCompressor.copy_stream`), `.lz4` (the LZ4 frame format,
/// `lz4.frame.compress`) and `.xz` (Python's `lzma.compress`, the .xz
/// container). CNPG passes `wal.compression` through as the flag
/// (cloudnative-pg/barman-cloud v0.5.1 `pkg/archiver/command.go`).
///
/// `name` is the object's key or file name; only the file name's suffix
/// counts. At most [`MAX_SEGMENT`] bytes are decompressed.
pub fn decompress(name: &str, bytes: &[u8]) -> Result<Vec<u8>, WalError> {
    let file = name.rsplit('/').next().unwrap_or(name);
    let suffix = file.split_once('.').map(|(_, s)| s).unwrap_or("");
    let suffix = suffix.rsplit('.').next().unwrap_or(suffix);
    let err = |source: std::io::Error| WalError::Decompress {
        name: name.to_string(),
        source,
    };
    let mut out = Vec::with_capacity(16 * 1024 * 1024);
    match suffix {
        "" | "partial" => return Ok(bytes.to_vec()),
        "gz" => flate2::read::MultiGzDecoder::new(bytes)
            .take(MAX_SEGMENT + 1)
            .read_to_end(&mut out)
            .map_err(err)?,
        "bz2" => bzip2::read::MultiBzDecoder::new(bytes)
            .take(MAX_SEGMENT + 1)
            .read_to_end(&mut out)
            .map_err(err)?,
        "snappy" => snap::read::FrameDecoder::new(bytes)
            .take(MAX_SEGMENT + 1)
            .read_to_end(&mut out)
            .map_err(err)?,
        "zst" => ruzstd::decoding::StreamingDecoder::new(bytes)
            .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?
            .take(MAX_SEGMENT + 1)
            .read_to_end(&mut out)
            .map_err(err)?,
        "lz4" => lz4_flex::frame::FrameDecoder::new(bytes)
            .take(MAX_SEGMENT + 1)
            .read_to_end(&mut out)
            .map_err(err)?,
        "xz" => {
            let mut w = Bounded(&mut out);
            lzma_rs::xz_decompress(&mut std::io::BufReader::new(bytes), &mut w).map_err(|e| {
                err(match e {
                    lzma_rs::error::Error::IoError(io) => io,
                    other => {
                        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{other:?}"))
                    }
                })
            })?;
            out.len()
        }
        other => {
            return Err(WalError::Compression {
                name: name.to_string(),
                suffix: other.to_string(),
            });
        }
    };
    Ok(out)
}

/// A writer that takes at most [`MAX_SEGMENT`] + 1 bytes (as `take` bounds
/// the readers above): a decompression bomb stops there.
struct Bounded<'a>(&'a mut Vec<u8>);

impl std::io::Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = (MAX_SEGMENT as usize + 1).saturating_sub(self.0.len());
        if room == 0 {
            return Err(std::io::Error::other("more than a WAL segment"));
        }
        let n = buf.len().min(room);
        self.0.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The start LSN of a segment from its file name (`TTTTTTTTLLLLLLLLSSSSSSSS`).
pub fn segment_start(name: &str, segment_size: u64) -> Option<u64> {
    let stem = name.get(..24)?;
    let log = u64::from_str_radix(&stem[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&stem[16..24], 16).ok()?;
    Some((log << 32) + seg * segment_size)
}

/// The newest commit or abort in one archived segment read on its own:
/// `key` is its object's key (its file name gives the segment and the
/// compression), `stored` the object's bytes. The segment size is the one
/// its own header gives. A record that continues into the next segment is
/// not read.
pub fn newest_in_object(key: &str, stored: &[u8]) -> Result<Option<Timestamp>, WalError> {
    let bytes = decompress(key, stored)?;
    let file = key.rsplit('/').next().unwrap_or(key);
    let name = file.get(..24).unwrap_or(file);
    let size = if bytes.len() >= LONG_PHD {
        u64::from(u32_at(&bytes, 32))
    } else {
        0
    };
    let start = segment_start(name, size).ok_or_else(|| WalError::NotWal {
        name: name.to_string(),
        detail: "not a segment's name".into(),
    })?;
    Ok(scan(name, start, &bytes, None)?.newest())
}

/// `0/1000D58`, as PostgreSQL prints an LSN.
pub fn lsn_string(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// A run of consecutive segments read as one WAL stream.
struct Stream<'a> {
    /// (start LSN, bytes), consecutive.
    parts: Vec<(u64, &'a [u8])>,
    page: usize,
    magic: u16,
}

impl Stream<'_> {
    fn end(&self) -> u64 {
        self.parts
            .last()
            .map(|(s, b)| s + b.len() as u64)
            .unwrap_or(0)
    }

    fn page_bytes(&self, page_lsn: u64) -> Option<&[u8]> {
        self.parts
            .iter()
            .find(|(s, b)| page_lsn >= *s && page_lsn < s + b.len() as u64)
            .and_then(|(s, b)| {
                let o = (page_lsn - s) as usize;
                b.get(o..o + self.page)
            })
    }

    /// The header length and `xlp_info` of the page at `page_lsn`, when the
    /// page is valid (PostgreSQL's magic, and the address it was written for).
    fn page_header(&self, page_lsn: u64) -> Option<(usize, u16)> {
        let p = self.page_bytes(page_lsn)?;
        if u16_at(p, 0) != self.magic || u64_at(p, 8) != page_lsn {
            return None;
        }
        let info = u16_at(p, 2);
        let len = if info & XLP_LONG_HEADER != 0 {
            LONG_PHD
        } else {
            SHORT_PHD
        };
        Some((len, info))
    }

    /// Reads `len` bytes of record data from `lsn`, stepping over page
    /// headers; returns them and the LSN after the last byte.
    fn read(&self, mut lsn: u64, len: usize) -> Option<(Vec<u8>, u64)> {
        let page = self.page as u64;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            if lsn.is_multiple_of(page) {
                let (hdr, info) = self.page_header(lsn)?;
                if info & XLP_FIRST_IS_CONTRECORD == 0 && !out.is_empty() {
                    return None; // the continuation never came
                }
                lsn += hdr as u64;
            }
            let page_end = (lsn / page + 1) * page;
            let take = ((page_end - lsn) as usize).min(len - out.len());
            let p = self.page_bytes(lsn / page * page)?;
            let o = (lsn % page) as usize;
            out.extend_from_slice(&p[o..o + take]);
            lsn += take as u64;
        }
        Some((out, lsn))
    }
}

fn align8(lsn: u64) -> u64 {
    (lsn + 7) & !7
}

/// Scans one segment (`bytes`, decompressed, starting at `start_lsn`).
/// `next` is the following segment, when known: a record that starts near
/// the end of this one and continues there is then read whole.
pub fn scan(
    name: &str,
    start_lsn: u64,
    bytes: &[u8],
    next: Option<&[u8]>,
) -> Result<SegmentScan, WalError> {
    let not_wal = |detail: String| WalError::NotWal {
        name: name.to_string(),
        detail,
    };
    if bytes.len() < LONG_PHD {
        return Err(not_wal(format!("{} bytes", bytes.len())));
    }
    let info = u16_at(bytes, 2);
    if info & XLP_LONG_HEADER == 0 {
        return Err(not_wal("the first page has no long header".into()));
    }
    let magic = u16_at(bytes, 0);
    if !(0xD000..0xD200).contains(&magic) {
        return Err(not_wal(format!("page magic {magic:#06x}")));
    }
    let seg_size = u32_at(bytes, 32) as usize;
    let page = u32_at(bytes, 36) as usize;
    if !page.is_power_of_two() || !(1024..=65536).contains(&page) {
        return Err(not_wal(format!("page size {page}")));
    }
    if seg_size != bytes.len() {
        return Err(not_wal(format!(
            "{} bytes, but its header says segments are {seg_size}",
            bytes.len()
        )));
    }
    if u64_at(bytes, 8) != start_lsn {
        return Err(not_wal(format!(
            "it was written for {}, not {} as its name says",
            lsn_string(u64_at(bytes, 8)),
            lsn_string(start_lsn)
        )));
    }
    let mut parts = vec![(start_lsn, bytes)];
    if let Some(n) = next.filter(|n| n.len() == seg_size) {
        parts.push((start_lsn + seg_size as u64, n));
    }
    let stream = Stream { parts, page, magic };
    let seg_end = start_lsn + seg_size as u64;

    // The first record starts after the rest of one begun in the previous segment.
    let mut lsn = start_lsn + LONG_PHD as u64;
    if info & XLP_FIRST_IS_CONTRECORD != 0 {
        // xlp_rem_len: the bytes of that record still to come.
        let rem = u32_at(bytes, 16) as usize;
        match stream.read(lsn, rem) {
            Some((_, after)) => lsn = align8(after),
            None => return Ok(SegmentScan::default()),
        }
    }

    let mut out = SegmentScan::default();
    let mut prev: Option<u64> = None;
    while lsn < seg_end {
        if lsn.is_multiple_of(page as u64) {
            match stream.page_header(lsn) {
                Some((hdr, _)) => lsn += hdr as u64,
                None => break,
            }
        }
        // xl_tot_len is always on the record's first page (records are
        // 8-byte aligned and it comes first); the rest may follow later.
        let Some((len_bytes, _)) = stream.read(lsn, 4) else {
            break;
        };
        let tot_len = u32_at(&len_bytes, 0) as usize;
        if tot_len < RECORD_HEADER || lsn + tot_len as u64 > stream.end() {
            break; // zeros after the last record, or a record cut off
        }
        let Some((rec, after)) = stream.read(lsn, tot_len) else {
            break;
        };
        let xl_prev = u64_at(&rec, 8);
        if prev.is_some_and(|p| p != xl_prev) {
            break; // stale bytes of a recycled segment
        }
        let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
        let mut digest = crc.digest();
        digest.update(&rec[RECORD_HEADER..]);
        digest.update(&rec[..20]);
        if digest.finalize() != u32_at(&rec, 20) {
            break;
        }
        out.records += 1;
        let (rm, info) = (rec[17], rec[16]);
        if rm == RM_XACT_ID
            && let Some(kind) = XactKind::from_info(info)
            && let Some(data) = main_data(&rec, magic)
            && data.len() >= 8
        {
            let micros = i64::from_le_bytes(data[..8].try_into().unwrap_or_default());
            let unix = PG_EPOCH_UNIX_SECS as i128 * 1_000_000 + micros as i128;
            if let Ok(time) = Timestamp::from_microsecond(unix as i64) {
                out.xact_ends.push(XactEnd {
                    lsn,
                    xid: u32_at(&rec, 4),
                    kind,
                    time,
                });
            }
        }
        prev = Some(lsn);
        if rm == RM_XLOG_ID && info & !XLR_INFO_MASK == XLOG_SWITCH {
            out.switched = true;
            break;
        }
        lsn = align8(after);
    }
    Ok(out)
}

/// A record's main data: the block and data headers after the record
/// header say how long it is, and it comes last.
fn main_data(rec: &[u8], magic: u16) -> Option<&[u8]> {
    let mut o = RECORD_HEADER;
    let get = |o: usize, n: usize| rec.get(o..o + n);
    // PostgreSQL 15 (page magic 0xD110) moved the compression bits of
    // a block image's `bimg_info`.
    let compressed = |bimg_info: u8| {
        if magic >= 0xD110 {
            bimg_info & (0x04 | 0x08 | 0x10) != 0
        } else {
            bimg_info & 0x02 != 0
        }
    };
    loop {
        let id = *rec.get(o)?;
        o += 1;
        match id {
            255 => {
                let len = *rec.get(o)? as usize;
                return rec.get(rec.len().checked_sub(len)?..);
            }
            254 => {
                let len = u32_at(get(o, 4)?, 0) as usize;
                return rec.get(rec.len().checked_sub(len)?..);
            }
            253 => o += 2, // replication origin
            252 => o += 4, // top-level xid
            0..=32 => {
                let fork_flags = *rec.get(o)?;
                o += 3; // fork_flags, data_length
                if fork_flags & 0x10 != 0 {
                    // XLogRecordBlockImageHeader: length, hole_offset, bimg_info
                    let bimg_info = *rec.get(o + 4)?;
                    o += 5;
                    if bimg_info & 0x01 != 0 && compressed(bimg_info) {
                        o += 2;
                    }
                }
                if fork_flags & 0x80 == 0 {
                    o += 12; // RelFileNode
                }
                o += 4; // BlockNumber
            }
            _ => return None,
        }
        if o >= rec.len() {
            return None; // no main data
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_give_their_start() {
        assert_eq!(
            segment_start("00000002000000010000000A.gz", 16 << 20),
            Some((1 << 32) + 10 * (16 << 20))
        );
        assert_eq!(lsn_string((1 << 32) + 0xD58), "1/D58");
    }

    #[test]
    fn garbage_is_not_wal() {
        let e = scan("000000010000000000000001", 1 << 24, &[0u8; 64], None).unwrap_err();
        assert!(e.to_string().contains("not a WAL segment"), "{e}");
        let e = decompress("000000010000000000000001.lzo", b"x").unwrap_err();
        assert!(e.to_string().contains("`lzo`"), "{e}");
        for suffix in ["zst", "lz4", "xz"] {
            let e =
                decompress(&format!("000000010000000000000001.{suffix}"), b"not it").unwrap_err();
            assert!(e.to_string().contains("cannot decompress"), "{suffix}: {e}");
        }
        let e = decompress("000000010000000000000001.gz", b"not gzip").unwrap_err();
        assert!(e.to_string().contains("cannot decompress"), "{e}");
    }
}
