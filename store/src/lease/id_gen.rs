//! Lease ids chosen by the server (a grant with ID 0), following etcd's scheme: the low 16 bits
//! of the member id, then a 48-bit counter that starts at the start time in milliseconds
//! shifted left by 8. Two members never collide (different prefixes, unless their ids share
//! the low 16 bits), and a restarted member starts past every id it handed out before unless
//! it handed out more than 256 per millisecond of its previous life. Ids are masked positive:
//! negative ids confuse clients that print them as unsigned hex.
//!
//! Uniqueness against existing leases is still checked by the caller (an explicit-id grant may
//! have taken any value), and the state machine refuses a duplicate in any case.

use crate::ids::{LeaseId, MemberId};
use std::sync::atomic::{AtomicU64, Ordering};

const SUFFIX_BITS: u32 = 48;
const COUNTER_BITS: u32 = 8;
const TIMESTAMP_BITS: u32 = SUFFIX_BITS - COUNTER_BITS;

fn low_bits(x: u64, n: u32) -> u64 {
    x & ((1u64 << n) - 1)
}

#[derive(Debug)]
pub struct IdGen {
    prefix: u64,
    suffix: AtomicU64,
}

impl IdGen {
    pub fn new(member: MemberId, seed_millis: u64) -> IdGen {
        IdGen {
            prefix: low_bits(member.0, 16) << SUFFIX_BITS,
            suffix: AtomicU64::new(low_bits(seed_millis, TIMESTAMP_BITS) << COUNTER_BITS),
        }
    }

    /// The next id: positive, never 0 (0 means "no lease" on the wire).
    pub fn next(&self) -> LeaseId {
        loop {
            let suffix = self.suffix.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            let id = (self.prefix | low_bits(suffix, SUFFIX_BITS)) & (i64::MAX as u64);
            if id != 0 {
                return LeaseId(id as i64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn ids_are_positive_distinct_and_carry_the_member_prefix() {
        let generator = IdGen::new(MemberId(0xffff_ffff_ffff_abcd), 1_700_000_000_000);
        let ids: BTreeSet<LeaseId> = (0..1000).map(|_| generator.next()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert!(id.0 > 0);
            // Bit 63 of the prefix is masked off to keep the id positive.
            assert_eq!((id.0 as u64) >> SUFFIX_BITS, 0x2bcd);
        }
    }

    #[test]
    fn members_do_not_collide_and_a_restart_moves_past_earlier_ids() {
        let a = IdGen::new(MemberId(1), 5_000);
        let b = IdGen::new(MemberId(2), 5_000);
        assert_ne!(a.next(), b.next());
        let first_life = IdGen::new(MemberId(1), 5_000);
        let last_of_first_life = (0..100).map(|_| first_life.next()).last().unwrap();
        let second_life = IdGen::new(MemberId(1), 5_001);
        assert!(second_life.next() > last_of_first_life);
    }

    #[test]
    fn zero_is_never_handed_out() {
        // Prefix 0 and a counter about to wrap to 0.
        let generator = IdGen { prefix: 0, suffix: AtomicU64::new((1u64 << SUFFIX_BITS) - 1) };
        assert_eq!(generator.next(), LeaseId(1));
    }
}
