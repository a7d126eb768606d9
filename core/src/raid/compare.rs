//! Whether two backends gave the same answer (the RAID's disagreement test), and short summaries
//! of answers for the reasons shown by `details`.
//!
//! Answers are compared by what a client could observe and what the backends' histories hold,
//! not byte for byte: sizes (`Finished`, `Packed`) differ between storage implementations and
//! are ignored; oid lists are compared as sets (their order is the backend's business); errors
//! are compared by class, and conflicts also by oid and serials (messages differ between
//! implementations).

use std::collections::BTreeSet;

use crate::wire::error::ZeoError;
use crate::wire::reply::VoteItem;
use crate::zeo::backend::{BackendError, BackendOutcome};

/// Whether `a` and `b`, the final outcomes of the same write on two backends, agree.
pub(crate) fn same_outcome(a: &BackendOutcome, b: &BackendOutcome) -> bool {
    use BackendOutcome as O;
    match (a, b) {
        (O::Voted { changed: c1, invalidated: i1 }, O::Voted { changed: c2, invalidated: i2 }) => {
            set(c1) == set(c2) && set(i1) == set(i2)
        }
        (O::Conflicts(x), O::Conflicts(y)) => conflicts(x) == conflicts(y),
        (O::Finished { tid: t1, .. }, O::Finished { tid: t2, .. }) => t1 == t2,
        (O::Committed { tid: t1 }, O::Committed { tid: t2 }) => t1 == t2,
        (O::Packed { .. }, O::Packed { .. }) => true,
        (O::Nil, O::Nil) => true,
        (O::Failed(e1), O::Failed(e2)) => same_error(e1, e2),
        _ => false,
    }
}

fn set<T: Ord + Clone>(v: &[T]) -> BTreeSet<T> {
    v.iter().cloned().collect()
}

fn conflicts(items: &[VoteItem]) -> BTreeSet<(u64, u64, u64)> {
    items
        .iter()
        .map(|i| match i {
            VoteItem::Oid(oid) => (oid.get(), 0, 0),
            VoteItem::Conflict { oid, committed, read, .. } => (oid.get(), committed.get(), read.get()),
        })
        .collect()
}

fn same_error(a: &BackendError, b: &BackendError) -> bool {
    if a.culprit != b.culprit || a.error.class_path() != b.error.class_path() {
        return false;
    }
    match (&a.error, &b.error) {
        (ZeoError::Conflict(x), ZeoError::Conflict(y))
        | (ZeoError::ReadConflict(x), ZeoError::ReadConflict(y)) => x.oid == y.oid && x.serials == y.serials,
        _ => true,
    }
}

/// A one-line summary of an outcome, for degradation reasons.
pub(crate) fn summary(o: &BackendOutcome) -> String {
    use BackendOutcome as O;
    match o {
        O::Voted { changed, invalidated } => {
            format!("voted ({} oid(s) written, {} changed)", invalidated.len(), changed.len())
        }
        O::Conflicts(items) => format!("{} conflict(s)", items.len()),
        O::Finished { tid, .. } => format!("finished as {tid}"),
        O::Committed { tid } => format!("committed as {tid}"),
        O::Packed { .. } => "packed".to_string(),
        O::Nil => "ok".to_string(),
        O::Failed(e) => format!("{}", e.error.class_path()),
        other => format!("{other:?}").chars().take(80).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Oid, Tid};
    use crate::wire::error::ConflictDetails;
    use crate::zeo::backend::{Culprit, StorageSize};

    fn conflict(oid: u64, committed: u64) -> BackendOutcome {
        BackendOutcome::Failed(BackendError {
            error: ZeoError::Conflict(ConflictDetails {
                message: "a".into(),
                oid: Some(Oid::new(oid)),
                class_name: None,
                serials: Some((Tid::new(committed), Tid::new(1))),
                extra: vec![],
            }),
            culprit: Culprit::Client,
        })
    }

    #[test]
    fn oid_lists_compare_as_sets_and_sizes_are_ignored() {
        let a = BackendOutcome::Voted { changed: vec![], invalidated: vec![Oid::new(1), Oid::new(2)] };
        let b = BackendOutcome::Voted { changed: vec![], invalidated: vec![Oid::new(2), Oid::new(1)] };
        let c =
            BackendOutcome::Voted { changed: vec![Oid::new(2)], invalidated: vec![Oid::new(2), Oid::new(1)] };
        assert!(same_outcome(&a, &b));
        assert!(!same_outcome(&a, &c));
        let f1 = BackendOutcome::Finished { tid: Tid::new(5), size: StorageSize { length: 1, size: 10 } };
        let f2 = BackendOutcome::Finished { tid: Tid::new(5), size: StorageSize { length: 1, size: 99 } };
        let f3 = BackendOutcome::Finished { tid: Tid::new(6), size: StorageSize::default() };
        assert!(same_outcome(&f1, &f2));
        assert!(!same_outcome(&f1, &f3));
    }

    #[test]
    fn errors_compare_by_class_and_conflict_serials_not_message() {
        assert!(same_outcome(&conflict(1, 5), &conflict(1, 5)));
        assert!(!same_outcome(&conflict(1, 5), &conflict(1, 6)));
        assert!(!same_outcome(
            &conflict(1, 5),
            &BackendOutcome::Voted { changed: vec![], invalidated: vec![] }
        ));
        let f = BackendOutcome::Failed(BackendError::backend("x"));
        assert!(!same_outcome(&conflict(1, 5), &f));
    }
}
