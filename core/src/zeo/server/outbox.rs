//! The per-connection ordered outbox (`zeo-protocol.md` §6.4).
//!
//! Every message to a client goes through its connection's outbox, in the order it was
//! produced. A read that goes to a backend reserves a slot when it is issued; the slot is filled
//! when the outcome arrives. Invalidations are appended when a commit finishes.
//!
//! Flush rule: write from the head; an unfilled read slot does not hold back later entries,
//! except an invalidation queued after it: that invalidation, and everything after it, waits
//! until every read slot before it is filled. So a read issued before commit T (answered as of
//! before T) is written before T's invalidation, and anything produced after T after it.
//!
//! Invariants: every `Pending` slot names a distinct request id.

use std::collections::VecDeque;

use crate::zeo::backend::BackendReqId;

/// What one outbox entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// A reply or push written as soon as nothing holds it back.
    Plain,
    /// An `invalidateTransaction` push: held back by every unfilled read before it.
    Invalidation,
    /// A read waiting for its backend outcome; `frames` collects what it produced so far.
    Pending(BackendReqId),
}

#[derive(Debug, Clone)]
struct Entry {
    kind: Kind,
    frames: Vec<u8>,
}

/// The ordered outbox of one connection: framed bytes waiting to be written.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outbox {
    entries: VecDeque<Entry>,
}

impl Outbox {
    /// Appends framed bytes to be written in order.
    pub(crate) fn push(&mut self, frames: Vec<u8>) {
        self.entries.push_back(Entry { kind: Kind::Plain, frames });
    }

    /// Appends an invalidation push.
    pub(crate) fn push_invalidation(&mut self, frames: Vec<u8>) {
        self.entries.push_back(Entry { kind: Kind::Invalidation, frames });
    }

    /// Reserves a slot for the answer to read `req`.
    pub(crate) fn reserve(&mut self, req: BackendReqId) {
        self.entries.push_back(Entry { kind: Kind::Pending(req), frames: Vec::new() });
    }

    /// Adds frames to the reserved slot of `req` (a partial answer); false if there is none.
    pub(crate) fn append(&mut self, req: BackendReqId, frames: &[u8]) -> bool {
        match self.entries.iter_mut().find(|e| e.kind == Kind::Pending(req)) {
            Some(e) => {
                e.frames.extend_from_slice(frames);
                true
            }
            None => false,
        }
    }

    /// Adds the final frames to the reserved slot of `req` and marks it filled.
    pub(crate) fn fill(&mut self, req: BackendReqId, frames: &[u8]) -> bool {
        match self.entries.iter_mut().find(|e| e.kind == Kind::Pending(req)) {
            Some(e) => {
                e.frames.extend_from_slice(frames);
                e.kind = Kind::Plain;
                true
            }
            None => false,
        }
    }

    /// Whether a slot is reserved for `req`.
    pub(crate) fn has_slot(&self, req: BackendReqId) -> bool {
        self.entries.iter().any(|e| e.kind == Kind::Pending(req))
    }

    /// The requests with a reserved slot, oldest first.
    pub(crate) fn pending(&self) -> impl Iterator<Item = BackendReqId> + '_ {
        self.entries.iter().filter_map(|e| match e.kind {
            Kind::Pending(r) => Some(r),
            _ => None,
        })
    }

    /// Takes every entry the flush rule lets out, concatenated.
    pub(crate) fn flush(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut read_pending = false;
        let mut kept = VecDeque::new();
        while let Some(e) = self.entries.pop_front() {
            match e.kind {
                Kind::Pending(_) => {
                    read_pending = true;
                    kept.push_back(e);
                }
                Kind::Invalidation if read_pending => {
                    kept.push_back(e);
                    kept.extend(self.entries.drain(..));
                }
                Kind::Plain | Kind::Invalidation => out.extend_from_slice(&e.frames),
            }
        }
        self.entries = kept;
        out
    }

    /// Number of entries waiting.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Checks the invariants.
    pub(crate) fn check(&self) -> Result<(), String> {
        let ids: Vec<BackendReqId> = self.pending().collect();
        for (i, r) in ids.iter().enumerate() {
            if ids.iter().skip(i + 1).any(|s| s == r) {
                return Err(format!("outbox slot for request {} twice", r.0));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_read_holds_back_only_a_later_invalidation_and_what_follows() {
        let mut o = Outbox::default();
        o.reserve(BackendReqId(1));
        o.push(b"a".to_vec());
        assert_eq!(o.flush(), b"a");
        o.push_invalidation(b"I".to_vec());
        o.push(b"b".to_vec());
        assert_eq!(o.flush(), b"");
        assert!(o.fill(BackendReqId(1), b"r"));
        assert_eq!(o.flush(), b"rIb");
        assert_eq!(o.len(), 0);
    }

    #[test]
    fn a_read_after_an_invalidation_does_not_hold_it_back() {
        let mut o = Outbox::default();
        o.push_invalidation(b"I".to_vec());
        o.reserve(BackendReqId(2));
        o.push_invalidation(b"J".to_vec());
        assert_eq!(o.flush(), b"I");
        assert!(o.append(BackendReqId(2), b"p"));
        assert_eq!(o.flush(), b"");
        assert!(o.fill(BackendReqId(2), b"q"));
        assert!(!o.fill(BackendReqId(2), b"q"));
        assert_eq!(o.flush(), b"pqJ");
    }
}
