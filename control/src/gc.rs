//! Deletion propagation through `metadata.ownerReferences`, pure: which objects depend on an
//! owner (a reference with the owner's uid), and what deleting the owner means for them under
//! each `propagationPolicy`, as Kubernetes' garbage collector does it:
//!
//! - **Background** (the default): the owner goes at once; once it is gone its dependents are
//!   garbage and are deleted in turn (recursively), unless another owner still holds them.
//! - **Foreground**: the owner gets `deletionTimestamp` and the `foregroundDeletion` finalizer
//!   and stays visible while its dependents are deleted; once none that blocks it
//!   (`blockOwnerDeletion: true`) is left, the finalizer comes off and the owner goes.
//! - **Orphan**: the owner gets the `orphan` finalizer, every dependent loses its reference to
//!   the owner (and stays), then the finalizer comes off and the owner goes.
//!
//! The finalizers make a cascade resumable: an owner that still carries one continues with the
//! same policy on the next look, whatever interrupted the last one. The shell (`api/delete.rs`)
//! reads owner and dependents, asks [`plan`] or [`plan_removed`] what to do, and does it.

use serde_json::{json, Value};

pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
pub const ORPHAN_FINALIZER: &str = "orphan";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

impl Propagation {
    pub fn parse(s: &str) -> Option<Propagation> {
        match s {
            "Background" => Some(Propagation::Background),
            "Foreground" => Some(Propagation::Foreground),
            "Orphan" => Some(Propagation::Orphan),
            _ => None,
        }
    }

    fn finalizer(self) -> Option<&'static str> {
        match self {
            Propagation::Background => None,
            Propagation::Foreground => Some(FOREGROUND_FINALIZER),
            Propagation::Orphan => Some(ORPHAN_FINALIZER),
        }
    }
}

pub fn uid(object: &Value) -> &str {
    object.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("")
}

fn finalizers(object: &Value) -> impl Iterator<Item = &str> {
    object.pointer("/metadata/finalizers").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
}

fn being_deleted(object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

/// The ownerReferences of `object`.
pub fn owner_refs(object: &Value) -> &[Value] {
    object.pointer("/metadata/ownerReferences").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// `object`'s reference to the owner with `owner_uid`, if it has one.
pub fn owner_ref<'a>(object: &'a Value, owner_uid: &str) -> Option<&'a Value> {
    if owner_uid.is_empty() {
        return None;
    }
    owner_refs(object).iter().find(|r| r.get("uid").and_then(Value::as_str) == Some(owner_uid))
}

/// The cascade an owner being deleted is still in the middle of (its finalizer says which).
pub fn pending(owner: &Value) -> Option<Propagation> {
    if !being_deleted(owner) {
        return None;
    }
    finalizers(owner).find_map(|f| match f {
        FOREGROUND_FINALIZER => Some(Propagation::Foreground),
        ORPHAN_FINALIZER => Some(Propagation::Orphan),
        _ => None,
    })
}

/// `object` with `finalizer` added (once).
pub fn with_finalizer(object: &Value, finalizer: &str) -> Value {
    let mut out = object.clone();
    if !finalizers(object).any(|f| f == finalizer) {
        let mut list: Vec<Value> = finalizers(object).map(|f| json!(f)).collect();
        list.push(json!(finalizer));
        out["metadata"]["finalizers"] = Value::Array(list);
    }
    out
}

/// `object` without `finalizer` (the list is dropped when it empties).
pub fn without_finalizer(object: &Value, finalizer: &str) -> Value {
    let rest = finalizers(object).filter(|f| *f != finalizer).map(|f| json!(f)).collect();
    with_metadata_list(object, "finalizers", rest)
}

/// `object` without its references to `owner_uid` (the list is dropped when it empties).
pub fn without_owner(object: &Value, owner_uid: &str) -> Value {
    let rest = owner_refs(object)
        .iter()
        .filter(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid))
        .cloned()
        .collect();
    with_metadata_list(object, "ownerReferences", rest)
}

/// `object` with `metadata[field]` set to `list`, or without the field if `list` is empty.
fn with_metadata_list(object: &Value, field: &str, list: Vec<Value>) -> Value {
    let mut out = object.clone();
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove(field);
        } else {
            meta.insert(field.into(), Value::Array(list));
        }
    }
    out
}

/// A dependent of the owner as the plan needs to see it.
#[derive(Clone, Debug)]
pub struct Dependent {
    pub object: Value,
    /// Some other owner of it still exists and is not itself being deleted in the foreground:
    /// the dependent is not garbage, it only loses its reference to this owner.
    pub other_owner_alive: bool,
}

/// One thing to do; dependents are named by their index in the slice given to the plan.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Add the finalizer to the owner and mark it deleted (`deletionTimestamp`), so that it
    /// stays, visibly being deleted, while its dependents are dealt with.
    MarkOwner { finalizer: &'static str },
    /// Delete the owner the ordinary way (its own finalizers or grace period may keep it).
    DeleteOwner,
    /// Delete dependent `index` with `propagation`.
    DeleteDependent { index: usize, propagation: Propagation },
    /// Write dependent `index` back as `object`: without its reference to the owner.
    Release { index: usize, object: Value },
    /// Take the finalizer off the owner: it goes unless something else still holds it.
    FinalizeOwner { finalizer: &'static str },
    /// Dependents that block the owner are still going away; the owner stays marked until
    /// the last of them is removed (which looks at the owner again).
    Wait,
}

/// What to do next to delete `owner` with `propagation`, given its current `dependents`. An
/// owner already in the middle of a cascade continues that one. The plan is one round: after
/// deleting dependents, the shell reads them again and plans again.
pub fn plan(owner: &Value, propagation: Propagation, dependents: &[Dependent]) -> Vec<Step> {
    let propagation = pending(owner).unwrap_or(propagation);
    let Some(finalizer) = propagation.finalizer() else {
        // Dependents are garbage once the owner is really gone (see `plan_removed`).
        return vec![Step::DeleteOwner];
    };
    let marked = being_deleted(owner) && finalizers(owner).any(|f| f == finalizer);
    if dependents.is_empty() {
        return vec![if marked { Step::FinalizeOwner { finalizer } } else { Step::DeleteOwner }];
    }
    let owner_uid = uid(owner);
    let mut steps = Vec::new();
    if !marked {
        steps.push(Step::MarkOwner { finalizer });
    }
    let mut acted = false;
    let mut blocked = false;
    for (index, d) in dependents.iter().enumerate() {
        let blocks = owner_ref(&d.object, owner_uid)
            .and_then(|r| r.get("blockOwnerDeletion"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if propagation == Propagation::Orphan || d.other_owner_alive {
            steps.push(Step::Release { index, object: without_owner(&d.object, owner_uid) });
        } else if being_deleted(&d.object) {
            blocked |= blocks;
        } else {
            // A dependent that blocks its owner is itself deleted in the foreground, so the
            // wait reaches all the way down, as Kubernetes' collector does.
            let propagation = if blocks { Propagation::Foreground } else { Propagation::Background };
            steps.push(Step::DeleteDependent { index, propagation });
            acted = true;
        }
    }
    if !acted {
        steps.push(if blocked { Step::Wait } else { Step::FinalizeOwner { finalizer } });
    }
    steps
}

/// What happens to the dependents of an owner that is gone (removed from the store): those
/// another owner still holds lose their reference; the others are deleted in the background,
/// unless already being deleted.
pub fn plan_removed(owner_uid: &str, dependents: &[Dependent]) -> Vec<Step> {
    dependents
        .iter()
        .enumerate()
        .filter_map(|(index, d)| {
            if d.other_owner_alive {
                Some(Step::Release { index, object: without_owner(&d.object, owner_uid) })
            } else if being_deleted(&d.object) {
                None
            } else {
                Some(Step::DeleteDependent { index, propagation: Propagation::Background })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Value {
        json!({"kind": "Deployment", "metadata": {"name": "web", "uid": "u-owner"}})
    }

    fn dependent(name: &str, block: bool) -> Dependent {
        Dependent {
            object: json!({"kind": "ReplicaSet", "metadata": {"name": name, "uid": format!("u-{name}"),
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u-owner",
                                     "controller": true, "blockOwnerDeletion": block}]}}),
            other_owner_alive: false,
        }
    }

    fn marked(object: &Value, finalizer: &str) -> Value {
        let mut o = with_finalizer(object, finalizer);
        o["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        o
    }

    #[test]
    fn background_deletes_the_owner_and_leaves_dependents_to_its_removal() {
        assert_eq!(plan(&owner(), Propagation::Background, &[dependent("a", true)]), vec![Step::DeleteOwner]);
        let deps = [dependent("a", true), Dependent { other_owner_alive: true, ..dependent("b", false) }];
        assert_eq!(
            plan_removed("u-owner", &deps),
            vec![
                Step::DeleteDependent { index: 0, propagation: Propagation::Background },
                Step::Release { index: 1, object: without_owner(&deps[1].object, "u-owner") },
            ]
        );
        let mut going = dependent("c", true);
        going.object["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        assert!(plan_removed("u-owner", &[going]).is_empty(), "already being deleted");
    }

    #[test]
    fn foreground_marks_deletes_dependents_then_finalizes() {
        let deps = [dependent("a", true), dependent("b", false)];
        assert_eq!(
            plan(&owner(), Propagation::Foreground, &deps),
            vec![
                Step::MarkOwner { finalizer: FOREGROUND_FINALIZER },
                Step::DeleteDependent { index: 0, propagation: Propagation::Foreground },
                Step::DeleteDependent { index: 1, propagation: Propagation::Background },
            ]
        );
        let owner = marked(&owner(), FOREGROUND_FINALIZER);
        // The next round: the dependents are gone.
        assert_eq!(
            plan(&owner, Propagation::Background, &[]),
            vec![Step::FinalizeOwner { finalizer: FOREGROUND_FINALIZER }]
        );
        // A blocking dependent still terminating makes the owner wait; a non-blocking one does not.
        let mut slow = dependent("a", true);
        slow.object["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        assert_eq!(plan(&owner, Propagation::Foreground, &[slow.clone()]), vec![Step::Wait]);
        slow.object["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] = json!(false);
        assert_eq!(
            plan(&owner, Propagation::Foreground, &[slow]),
            vec![Step::FinalizeOwner { finalizer: FOREGROUND_FINALIZER }]
        );
    }

    #[test]
    fn orphan_releases_every_dependent() {
        let deps = [dependent("a", true)];
        let released = without_owner(&deps[0].object, "u-owner");
        assert!(released["metadata"].get("ownerReferences").is_none());
        assert_eq!(
            plan(&owner(), Propagation::Orphan, &deps),
            vec![
                Step::MarkOwner { finalizer: ORPHAN_FINALIZER },
                Step::Release { index: 0, object: released },
                Step::FinalizeOwner { finalizer: ORPHAN_FINALIZER },
            ]
        );
    }

    #[test]
    fn without_dependents_a_delete_is_just_a_delete() {
        for p in [Propagation::Background, Propagation::Foreground, Propagation::Orphan] {
            assert_eq!(plan(&owner(), p, &[]), vec![Step::DeleteOwner]);
        }
    }

    #[test]
    fn an_interrupted_cascade_continues_with_its_own_policy() {
        let owner = marked(&owner(), ORPHAN_FINALIZER);
        assert_eq!(pending(&owner), Some(Propagation::Orphan));
        let steps = plan(&owner, Propagation::Background, &[dependent("a", true)]);
        assert!(matches!(steps[0], Step::Release { index: 0, .. }), "{steps:?}");
        assert_eq!(steps[1], Step::FinalizeOwner { finalizer: ORPHAN_FINALIZER });
    }

    #[test]
    fn a_dependent_with_another_live_owner_is_released_not_deleted() {
        let d = Dependent { other_owner_alive: true, ..dependent("a", true) };
        let steps = plan(&owner(), Propagation::Foreground, &[d]);
        assert!(matches!(steps[1], Step::Release { index: 0, .. }), "{steps:?}");
        assert_eq!(steps[2], Step::FinalizeOwner { finalizer: FOREGROUND_FINALIZER });
    }

    #[test]
    fn finalizer_and_owner_edits() {
        let o = json!({"metadata": {"finalizers": ["x"], "ownerReferences": [{"uid": "a"}, {"uid": "b"}]}});
        assert_eq!(with_finalizer(&o, "x"), o);
        assert_eq!(with_finalizer(&o, "y")["metadata"]["finalizers"], json!(["x", "y"]));
        assert!(without_finalizer(&o, "x")["metadata"].get("finalizers").is_none());
        assert_eq!(without_owner(&o, "a")["metadata"]["ownerReferences"], json!([{"uid": "b"}]));
        assert!(owner_ref(&o, "").is_none() && owner_ref(&o, "b").is_some());
        assert_eq!(pending(&o), None);
    }
}
