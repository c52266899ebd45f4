//! Synthetic WAL segments for tests that need a catalog of hundreds of
//! segments: PostgreSQL 15's on-disk layout (a long page header on the
//! first 8 KiB page, 8-byte aligned `XLogRecord`s with their CRC-32C, a
//! transaction manager COMMIT record whose main data is `xact_time`, the
//! rest of the segment zero), as in src/include/access/xlog_internal.h,
//! xlogrecord.h and xact.h. `tests/wal.rs` checks with `pg_waldump` that
//! PostgreSQL reads these segments as it reads real ones.

#![allow(dead_code)]

use jiff::Timestamp;

pub const SEGMENT: usize = 16 << 20;
const PAGE: usize = 8192;
const MAGIC_PG15: u16 = 0xD110;

/// A 16 MiB segment named `name` (24 hex digits) holding one COMMIT record
/// per time, in order.
pub fn segment(name: &str, commits: &[Timestamp]) -> Vec<u8> {
    segment_with_carry(name, 0, commits)
}

/// The same, starting with the last `carry` bytes of a record begun in the
/// previous segment (`XLP_FIRST_IS_CONTRECORD`, `xlp_rem_len` at byte 16 of
/// each page header it runs through), as a segment of a busy server starts.
pub fn segment_with_carry(name: &str, carry: usize, commits: &[Timestamp]) -> Vec<u8> {
    let tli = u32::from_str_radix(&name[0..8], 16).unwrap();
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&name[16..24], 16).unwrap();
    let start = (log << 32) + seg * SEGMENT as u64;
    let mut b = vec![0u8; SEGMENT];
    let header = |b: &mut Vec<u8>, page: usize, info: u16, rem: u32| {
        let o = page * PAGE;
        b[o..o + 2].copy_from_slice(&MAGIC_PG15.to_le_bytes());
        b[o + 2..o + 4].copy_from_slice(&info.to_le_bytes());
        b[o + 4..o + 8].copy_from_slice(&tli.to_le_bytes());
        b[o + 8..o + 16].copy_from_slice(&(start + o as u64).to_le_bytes());
        b[o + 16..o + 20].copy_from_slice(&rem.to_le_bytes()); // xlp_rem_len
    };
    // XLogLongPageHeaderData: XLP_LONG_HEADER, and XLP_FIRST_IS_CONTRECORD
    // when a record carries over.
    header(&mut b, 0, 0x0002 | u16::from(carry > 0), carry as u32);
    b[24..32].copy_from_slice(&7_300_000_000_000_000_001u64.to_le_bytes()); // system id
    b[32..36].copy_from_slice(&(SEGMENT as u32).to_le_bytes());
    b[36..40].copy_from_slice(&(PAGE as u32).to_le_bytes());
    let (mut at, mut left, mut page) = (40usize, carry, 0usize);
    while left > 0 {
        let take = ((page + 1) * PAGE - at).min(left);
        b[at..at + take].fill(0xAB);
        left -= take;
        at += take;
        if left > 0 {
            page += 1;
            header(&mut b, page, 0x0001, left as u32);
            at = page * PAGE + 24;
        }
    }
    at = (at + 7) & !7;
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    // The first record's xl_prev is in the previous segment.
    let mut prev = start - 64;
    for (i, t) in commits.iter().enumerate() {
        let micros = t.as_microsecond() - 946_684_800_000_000;
        let mut rec = vec![0u8; 24];
        let tot = 24 + 2 + 8;
        rec[0..4].copy_from_slice(&(tot as u32).to_le_bytes());
        rec[4..8].copy_from_slice(&(1000 + i as u32).to_le_bytes()); // xid
        rec[8..16].copy_from_slice(&prev.to_le_bytes());
        rec[16] = 0x00; // XLOG_XACT_COMMIT
        rec[17] = 1; // RM_XACT_ID
        rec.extend_from_slice(&[255, 8]); // XLR_BLOCK_ID_DATA_SHORT, 8 bytes
        rec.extend_from_slice(&micros.to_le_bytes());
        let mut d = crc.digest();
        d.update(&rec[24..]);
        d.update(&rec[..20]);
        let sum = d.finalize();
        rec[20..24].copy_from_slice(&sum.to_le_bytes());
        assert!(
            at % PAGE + rec.len() < PAGE,
            "a few records, all on the page the carry ends on"
        );
        b[at..at + rec.len()].copy_from_slice(&rec);
        prev = start + at as u64;
        at = (at + rec.len() + 7) & !7;
    }
    b
}

/// The same, gzip-compressed as `barman-cloud-wal-archive -z` stores it.
pub fn segment_gz(name: &str, commits: &[Timestamp]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &segment(name, commits)).unwrap();
    enc.finish().unwrap()
}
