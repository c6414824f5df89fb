//! Keys and values of the generated operations: which key operation *n* touches, its bytes, and
//! the send time that `watch` writers carry in the value.
//!
//! Pure functions: the shell owns the random number generators and the clock and passes their
//! outputs in.

/// How operation numbers map to keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOrder {
    /// Operation *n* uses key *n* (etcd benchmark's default): a put run writes fresh keys.
    Sequential,
    /// Each operation picks one of `space` keys uniformly at random.
    Random { space: u64 },
}

/// A pseudo-random `u64` that depends only on `seed` and `op` (the `op`-th output of SplitMix64
/// seeded with `seed`). Keys are drawn from it instead of from a per-client generator so that
/// operation *n* touches the same key whichever client happens to run it: two runs with one
/// seed (say against Berth and against etcd) send exactly the same operations.
pub fn mix(seed: u64, op: u64) -> u64 {
    let mut z = seed.wrapping_add(op.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `len` filler bytes derived from `seed`: values are not all one byte, so nothing along the
/// way (a compressing disk, say) can make them cheaper than real data.
pub fn filler(seed: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| mix(seed, i as u64) as u8).collect()
}

/// The key index of operation `op`; `random` is a uniformly random `u64` from the caller.
///
/// The modulo bias of `random % space` is below `space / 2^64`: irrelevant for a benchmark.
pub fn key_index(order: KeyOrder, op: u64, random: u64) -> u64 {
    match order {
        KeyOrder::Sequential => op,
        KeyOrder::Random { space } => {
            assert!(space > 0, "an empty key space is refused by argument validation");
            random % space
        }
    }
}

/// How many distinct keys `key_size` bytes can hold; `None` when it is more than a `u64` counts.
pub fn max_distinct_keys(key_size: usize) -> Option<u64> {
    if key_size >= 8 {
        None
    } else {
        Some(1u64 << (8 * key_size))
    }
}

/// Writes key `index` into `key`: big-endian in the last bytes, zero-padded in front, so keys
/// of one size sort in index order (ranges over them are meaningful) and every byte string of
/// the size can occur. A key shorter than 8 bytes keeps only the low bytes: sequential keys
/// wrap around (overwriting earlier ones), which is what a long run with short keys asks for.
pub fn encode_key(index: u64, key: &mut [u8]) {
    let bytes = index.to_be_bytes();
    let n = key.len().min(bytes.len());
    let (pad, tail) = key.split_at_mut(key.len() - n);
    pad.fill(0);
    tail.copy_from_slice(&bytes[bytes.len() - n..]);
}

/// The smallest key greater than every key starting with `prefix` (etcd's `range_end` for a
/// prefix): the prefix with its last byte below 0xff incremented and the rest dropped. An
/// all-0xff (or empty) prefix has no such key; etcd spells "to the end" as `[0]`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&b| b < 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => vec![0],
    }
}

/// Bytes at the front of a `watch` value that carry the send time.
pub const STAMP_BYTES: usize = 8;

/// Puts the writer's send time (nanoseconds since the run's start, on the run's one clock) at
/// the front of `value`. The watcher reads it back on receipt, so put→event latency needs no
/// table shared between writers and watchers and stays right when keys repeat.
pub fn stamp_value(value: &mut [u8], sent_nanos: u64) {
    value[..STAMP_BYTES].copy_from_slice(&sent_nanos.to_le_bytes());
}

/// The send time in a value written by [`stamp_value`]; `None` if the value is too short to be
/// one of ours.
pub fn read_stamp(value: &[u8]) -> Option<u64> {
    let bytes: [u8; STAMP_BYTES] = value.get(..STAMP_BYTES)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// The prefix one `watch` run writes under: the user's prefix plus a per-run id, so that two
/// runs against one cluster (or a leftover writer) never feed each other's watchers.
pub fn run_prefix(prefix: &[u8], run_id: u64) -> Vec<u8> {
    let mut out = prefix.to_vec();
    out.extend_from_slice(format!("{run_id:016x}/").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_keys_follow_the_op_number() {
        assert_eq!(key_index(KeyOrder::Sequential, 7, 12345), 7);
        assert_eq!(key_index(KeyOrder::Random { space: 10 }, 7, 12345), 5);
        assert_eq!(key_index(KeyOrder::Random { space: 1 }, 7, u64::MAX), 0);
    }

    #[test]
    fn mix_is_deterministic_and_spreads_keys() {
        assert_eq!(mix(1, 42), mix(1, 42));
        assert_ne!(mix(1, 42), mix(2, 42));
        assert_ne!(mix(1, 42), mix(1, 43));
        // SplitMix64 seeded with 0: its first output is a published test vector.
        assert_eq!(mix(0, 0), 0xe220_a839_7b1d_cdaf);
        // 100,000 draws over 10 keys: each key within 5% of its share.
        let mut counts = [0u32; 10];
        for op in 0..100_000 {
            counts[key_index(KeyOrder::Random { space: 10 }, op, mix(7, op)) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (9_500..=10_500).contains(&c)), "{counts:?}");
        assert_eq!(filler(3, 4), filler(3, 4));
        assert_eq!(filler(3, 0), Vec::<u8>::new());
        assert!(filler(3, 64).iter().any(|&b| b != filler(3, 64)[0]), "filler is not one repeated byte");
    }

    #[test]
    fn keys_are_big_endian_and_padded() {
        let mut k = [9u8; 10];
        encode_key(0x0102, &mut k);
        assert_eq!(k, [0, 0, 0, 0, 0, 0, 0, 0, 1, 2]);
        let mut k = [0u8; 8];
        encode_key(u64::MAX, &mut k);
        assert_eq!(k, [0xff; 8]);
        // Short keys keep the low bytes: index 0x0102 with one byte is key 0x02.
        let mut k = [0u8; 1];
        encode_key(0x0102, &mut k);
        assert_eq!(k, [2]);
    }

    #[test]
    fn keys_sort_in_index_order() {
        let key = |i| {
            let mut k = vec![0u8; 3];
            encode_key(i, &mut k);
            k
        };
        for i in [0u64, 1, 255, 256, 65_535, 65_536, 1 << 23] {
            assert!(key(i) < key(i + 1), "key {i}");
        }
    }

    #[test]
    fn distinct_keys_per_size() {
        assert_eq!(max_distinct_keys(1), Some(256));
        assert_eq!(max_distinct_keys(3), Some(1 << 24));
        assert_eq!(max_distinct_keys(7), Some(1 << 56));
        assert_eq!(max_distinct_keys(8), None);
    }

    #[test]
    fn prefix_end_is_etcds() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b");
        assert_eq!(prefix_end(&[0xff, 0xff]), [0]);
        assert_eq!(prefix_end(b""), [0]);
    }

    #[test]
    fn stamps_round_trip() {
        let mut v = vec![7u8; 16];
        stamp_value(&mut v, 0x1122_3344_5566_7788);
        assert_eq!(read_stamp(&v), Some(0x1122_3344_5566_7788));
        assert_eq!(&v[8..], &[7; 8], "the filler after the stamp is kept");
        assert_eq!(read_stamp(&v[..7]), None);
    }

    #[test]
    fn run_prefixes_differ_per_run() {
        assert_eq!(run_prefix(b"/p/", 0xab), b"/p/00000000000000ab/");
        assert_ne!(run_prefix(b"/p/", 1), run_prefix(b"/p/", 2));
    }
}
