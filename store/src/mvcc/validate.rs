//! Checks a request must pass before it is proposed to Raft, mirroring etcd's API-edge checks
//! (empty keys, contradictory flags, txn size and duplicate keys). Pure functions.

use super::types::*;
use crate::error::{StoreError, StoreResult};
use std::collections::BTreeSet;

/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;

pub fn check_range(req: &RangeRequest) -> StoreResult<()> {
    non_empty(&req.range.start)
}

pub fn check_put(req: &PutRequest) -> StoreResult<()> {
    non_empty(&req.key)?;
    if req.ignore_value && !req.value.is_empty() {
        return Err(StoreError::ValueProvided);
    }
    if req.ignore_lease && req.lease.is_some() {
        return Err(StoreError::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete(req: &DeleteRangeRequest) -> StoreResult<()> {
    non_empty(&req.range.start)
}

pub fn check_txn(req: &TxnRequest) -> StoreResult<()> {
    check_txn_ops(req, MAX_TXN_OPS)?;
    branch_keys(&req.success)?;
    branch_keys(&req.failure)?;
    Ok(())
}

fn non_empty(key: &[u8]) -> StoreResult<()> {
    if key.is_empty() {
        Err(StoreError::EmptyKey)
    } else {
        Ok(())
    }
}

fn check_txn_ops(req: &TxnRequest, max_ops: usize) -> StoreResult<()> {
    let widest = req.compare.len().max(req.success.len()).max(req.failure.len());
    if widest > max_ops {
        return Err(StoreError::TooManyOps);
    }
    for c in &req.compare {
        non_empty(&c.range.start)?;
    }
    for op in req.success.iter().chain(&req.failure) {
        match op {
            RequestOp::Range(r) => check_range(r)?,
            RequestOp::Put(p) => check_put(p)?,
            RequestOp::DeleteRange(d) => check_delete(d)?,
            RequestOp::Txn(inner) => check_txn_ops(inner, max_ops)?,
        }
    }
    Ok(())
}

/// The keys one branch writes: puts must be unique and must not fall inside a deleted range.
/// Both branches of a nested txn count, since either may run.
fn branch_keys(ops: &[RequestOp]) -> StoreResult<(Vec<KeyRange>, BTreeSet<Vec<u8>>)> {
    let mut dels: Vec<KeyRange> = Vec::new();
    let mut puts: BTreeSet<Vec<u8>> = BTreeSet::new();
    for op in ops {
        match op {
            RequestOp::Put(p) => {
                if !puts.insert(p.key.clone()) {
                    return Err(StoreError::DuplicateKey);
                }
            }
            RequestOp::DeleteRange(d) => dels.push(d.range.clone()),
            RequestOp::Range(_) => {}
            RequestOp::Txn(inner) => {
                let (s_dels, s_puts) = branch_keys(&inner.success)?;
                let (f_dels, f_puts) = branch_keys(&inner.failure)?;
                for key in s_puts.iter().chain(&f_puts) {
                    if puts.contains(key) {
                        return Err(StoreError::DuplicateKey);
                    }
                }
                puts.extend(s_puts.into_iter().chain(f_puts));
                dels.extend(s_dels.into_iter().chain(f_dels));
            }
        }
    }
    for key in &puts {
        let single = KeyRange::single(key.clone());
        if dels.iter().any(|d| d.overlaps(&single)) {
            return Err(StoreError::DuplicateKey);
        }
    }
    Ok((dels, puts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> RequestOp {
        RequestOp::Put(PutRequest::new(k.as_bytes(), "v"))
    }
    fn del(r: KeyRange) -> RequestOp {
        RequestOp::DeleteRange(DeleteRangeRequest { range: r, prev_kv: false })
    }

    #[test]
    fn duplicate_puts_in_one_branch_are_rejected() {
        let txn = TxnRequest { success: vec![put("a"), put("a")], ..Default::default() };
        assert_eq!(check_txn(&txn), Err(StoreError::DuplicateKey));
        // The same key in the two branches is fine: only one of them runs.
        let txn = TxnRequest { success: vec![put("a")], failure: vec![put("a")], ..Default::default() };
        assert_eq!(check_txn(&txn), Ok(()));
    }

    #[test]
    fn put_inside_deleted_range_is_rejected_but_overlapping_deletes_are_not() {
        let txn = TxnRequest { success: vec![del(KeyRange::prefix(b"a")), put("ab")], ..Default::default() };
        assert_eq!(check_txn(&txn), Err(StoreError::DuplicateKey));
        let txn = TxnRequest {
            success: vec![del(KeyRange::prefix(b"a")), del(KeyRange::prefix(b"ab"))],
            ..Default::default()
        };
        assert_eq!(check_txn(&txn), Ok(()));
    }

    #[test]
    fn nested_txn_puts_count_against_the_outer_branch() {
        let inner = TxnRequest { failure: vec![put("a")], ..Default::default() };
        let txn = TxnRequest { success: vec![put("a"), RequestOp::Txn(inner)], ..Default::default() };
        assert_eq!(check_txn(&txn), Err(StoreError::DuplicateKey));
    }

    #[test]
    fn too_many_ops_and_empty_keys() {
        let txn = TxnRequest { success: (0..129).map(|i| put(&format!("k{i}"))).collect(), ..Default::default() };
        assert_eq!(check_txn(&txn), Err(StoreError::TooManyOps));
        let txn = TxnRequest { success: (0..128).map(|i| put(&format!("k{i}"))).collect(), ..Default::default() };
        assert_eq!(check_txn(&txn), Ok(()));
        let txn = TxnRequest { success: vec![put("")], ..Default::default() };
        assert_eq!(check_txn(&txn), Err(StoreError::EmptyKey));
    }

    #[test]
    fn put_flag_contradictions() {
        let mut p = PutRequest::new("k", "v");
        p.ignore_value = true;
        assert_eq!(check_put(&p), Err(StoreError::ValueProvided));
        let mut p = PutRequest::new("k", "");
        p.ignore_lease = true;
        p.lease = Some(crate::ids::LeaseId(5));
        assert_eq!(check_put(&p), Err(StoreError::LeaseProvided));
    }
}
