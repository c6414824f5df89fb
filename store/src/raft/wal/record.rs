//! The write-ahead log's on-disk records and their framing. Pure: bytes in, records out.
//!
//! A segment is a preallocated file of zeros into which records are written back to back:
//!
//! ```text
//! [ payload length: u32 LE ][ CRC-32 of the payload: u32 LE ][ payload: bincode(Record) ]
//! ```
//!
//! A length of zero marks the end of the written part (no payload is empty). A record whose
//! length runs past the segment or whose checksum fails is a *torn* tail when it is the last thing
//! in the newest segment (a crash in the middle of a write that was never acknowledged), and
//! corruption anywhere else.

use crate::raft::types::{LogId, Vote};
use serde::{Deserialize, Serialize};

/// Bytes of framing before each payload.
pub const HEADER_LEN: usize = 8;

/// One thing the log remembers. `E` is the entry type: borrowed when writing, owned when read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record<E> {
    /// A Raft entry. Writing index `i` replaces any entry at `i` or later.
    Entry(E),
    /// Entries from this index on are gone (a new leader overwrote them).
    Truncate(u64),
    /// Entries up to and including this log id are gone (a snapshot covers them).
    Purge(LogId),
    /// The vote, which must survive a crash once written and synced.
    Vote(Vote),
    /// The highest index known to be committed (a hint: losing it is harmless).
    Committed(Option<LogId>),
}

impl<E> Record<E> {
    /// The same record with its entry turned into something else (e.g. its log id).
    pub fn map<F>(self, f: impl FnOnce(E) -> F) -> Record<F> {
        match self {
            Record::Entry(entry) => Record::Entry(f(entry)),
            Record::Truncate(from) => Record::Truncate(from),
            Record::Purge(log_id) => Record::Purge(log_id),
            Record::Vote(vote) => Record::Vote(vote),
            Record::Committed(committed) => Record::Committed(committed),
        }
    }
}

/// Frames one record: header plus payload.
pub fn frame<E: Serialize>(record: &Record<E>) -> Result<Vec<u8>, String> {
    let payload = bincode::serialize(record).map_err(|e| format!("cannot encode a log record: {e}"))?;
    let len =
        u32::try_from(payload.len()).map_err(|_| format!("log record of {} bytes is too large", payload.len()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Where a record's frame sits in its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub offset: u64,
    pub len: u32,
}

/// How the written part of a segment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// At a zero length or exactly at the end of the segment.
    Clean,
    /// At a record that is incomplete or fails its checksum, starting at `offset`.
    Damaged { offset: u64, reason: String },
}

/// Every record of a segment, in order, and where the written part ends.
pub struct Parsed<E> {
    pub records: Vec<(Span, Record<E>)>,
    /// Where the next record goes: the end of the last good record.
    pub end: u64,
    pub tail: Tail,
}

/// Reads the records of one segment's bytes.
pub fn parse<E: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Parsed<E> {
    let mut records = Vec::new();
    let mut at = 0usize;
    let damaged = |at: usize, reason: String| Tail::Damaged { offset: at as u64, reason };
    let tail = loop {
        let Some(header) = bytes.get(at..at + HEADER_LEN) else {
            // Fewer bytes than a header left: fine if they are zeros (unwritten space).
            break if bytes[at..].iter().all(|b| *b == 0) { Tail::Clean } else { damaged(at, "partial header".into()) };
        };
        let len = u32::from_le_bytes(header[..4].try_into().expect("four bytes"));
        if len == 0 {
            break Tail::Clean;
        }
        let crc = u32::from_le_bytes(header[4..].try_into().expect("four bytes"));
        let Some(payload) = bytes.get(at + HEADER_LEN..at + HEADER_LEN + len as usize) else {
            break damaged(at, format!("a record of {len} bytes runs past the end of the segment"));
        };
        if crc32fast::hash(payload) != crc {
            break damaged(at, "checksum mismatch".into());
        }
        match bincode::deserialize(payload) {
            Ok(record) => records.push((Span { offset: at as u64, len: HEADER_LEN as u32 + len }, record)),
            Err(e) => break damaged(at, format!("undecodable record: {e}")),
        }
        at += HEADER_LEN + len as usize;
    };
    let end = match &tail {
        Tail::Clean => at as u64,
        Tail::Damaged { offset, .. } => *offset,
    };
    Parsed { records, end, tail }
}

/// Decodes one framed record read back from its span.
pub fn unframe<E: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<Record<E>, String> {
    let parsed = parse::<E>(bytes);
    match (parsed.tail, parsed.records.into_iter().next()) {
        (Tail::Clean, Some((_, record))) => Ok(record),
        (Tail::Damaged { reason, .. }, _) => Err(reason),
        (Tail::Clean, None) => Err("no record where the index points".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type R = Record<String>;

    fn segment(records: &[R], capacity: usize) -> Vec<u8> {
        let mut bytes: Vec<u8> = records.iter().flat_map(|r| frame(r).unwrap()).collect();
        bytes.resize(capacity, 0);
        bytes
    }

    #[test]
    fn records_round_trip_and_stop_at_unwritten_space() {
        let records = vec![R::Entry("a".into()), R::Truncate(3), R::Committed(None), R::Entry("b".into())];
        let bytes = segment(&records, 4096);
        let parsed = parse::<String>(&bytes);
        assert_eq!(parsed.tail, Tail::Clean);
        assert_eq!(parsed.records.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(), records);
        let (span, _) = parsed.records[3];
        assert_eq!(parsed.end, span.offset + span.len as u64);
        let one = &bytes[span.offset as usize..(span.offset + span.len as u64) as usize];
        assert_eq!(unframe::<String>(one).unwrap(), R::Entry("b".into()));
    }

    #[test]
    fn a_segment_filled_exactly_is_clean() {
        let bytes: Vec<u8> = frame(&R::Entry("x".into())).unwrap();
        let parsed = parse::<String>(&bytes);
        assert_eq!((parsed.records.len(), parsed.tail, parsed.end), (1, Tail::Clean, bytes.len() as u64));
    }

    #[test]
    fn torn_and_corrupt_records_end_the_parse_where_they_start() {
        let good = frame(&R::Entry("good".into())).unwrap();
        let next = frame(&R::Entry("next".into())).unwrap();
        // A write cut short: the header made it, half the payload did not.
        let mut torn = good.clone();
        torn.extend_from_slice(&next[..next.len() - 2]);
        torn.resize(good.len() + next.len() - 2, 0);
        let parsed = parse::<String>(&torn);
        assert_eq!(parsed.records.len(), 1);
        assert_eq!(parsed.end, good.len() as u64);
        assert!(matches!(parsed.tail, Tail::Damaged { offset, .. } if offset == good.len() as u64));

        // A flipped bit in the payload.
        let mut flipped = segment(&[R::Entry("good".into()), R::Entry("next".into())], 1024);
        flipped[good.len() + HEADER_LEN + 1] ^= 0x40;
        let parsed = parse::<String>(&flipped);
        assert_eq!(parsed.records.len(), 1);
        assert!(matches!(parsed.tail, Tail::Damaged { ref reason, .. } if reason.contains("checksum")));

        // Garbage shorter than a header after the last record.
        let mut short = good.clone();
        short.extend_from_slice(&[7, 7, 7]);
        assert!(matches!(parse::<String>(&short).tail, Tail::Damaged { .. }));
    }
}
