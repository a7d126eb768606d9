//! The invariants, as pure functions over what a run recorded and the backends' final
//! histories. Each returns its violations as readable lines (empty: it holds).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::zeo::backend::WholeTxn;

use crate::record::{parse_data, Commit, Log, Outcome, Read};

/// A backend's final history, and whether the RAID had it optimal at the end.
#[derive(Debug, Clone)]
pub struct Final {
    /// Its name.
    pub name: String,
    /// Whether it was optimal at the monitor's last look.
    pub optimal: bool,
    /// Its transactions, oldest first.
    pub history: Vec<WholeTxn>,
}

/// (1) No acknowledged commit lost: every acked tid is in every optimal backend, with the data
/// its client wrote for each of its objects.
pub fn no_lost_commit(commits: &[Commit], finals: &[Final]) -> Vec<String> {
    let mut v = Vec::new();
    for f in finals.iter().filter(|f| f.optimal) {
        let by_tid: BTreeMap<Tid, &WholeTxn> = f.history.iter().map(|t| (t.header.tid, t)).collect();
        for c in commits {
            let Outcome::Acked(tid) = c.outcome else { continue };
            match by_tid.get(&tid) {
                None => v.push(format!(
                    "invariant 1: c{}'s txn {} acknowledged as {tid} at {:?} is missing from optimal backend {}",
                    c.client, c.seq, c.ended, f.name
                )),
                Some(t) => {
                    for oid in &c.oids {
                        let rec = t.records.iter().find(|r| r.oid == *oid);
                        if rec.and_then(|r| r.data.as_ref()) != Some(&c.data) {
                            v.push(format!(
                                "invariant 1: {} in {tid} on {} is {:?}, c{} wrote {:?}",
                                oid,
                                f.name,
                                rec.map(|r| r.data.clone()),
                                c.client,
                                c.data
                            ));
                        }
                    }
                }
            }
        }
    }
    v
}

/// (2) Every optimal backend holds the identical history.
pub fn identical_histories(finals: &[Final]) -> Vec<String> {
    let optimal: Vec<&Final> = finals.iter().filter(|f| f.optimal).collect();
    let Some((first, rest)) = optimal.split_first() else { return Vec::new() };
    let mut v = Vec::new();
    for other in rest {
        if other.history == first.history {
            continue;
        }
        let at = first.history.iter().zip(&other.history).position(|(a, b)| a != b);
        let line = match at {
            Some(i) => format!(
                "invariant 2: {} and {} differ at transaction #{i}: {:?} vs {:?}",
                first.name, other.name, first.history[i].header, other.history[i].header
            ),
            None => format!(
                "invariant 2: {} has {} transactions, {} has {} (one is a prefix of the other)",
                first.name,
                first.history.len(),
                other.name,
                other.history.len()
            ),
        };
        v.push(line);
    }
    v
}

/// Revisions per object in a history: `(tid, data)`, oldest first.
fn revisions(history: &[WholeTxn]) -> BTreeMap<Oid, Vec<(Tid, Option<Bytes>)>> {
    let mut m: BTreeMap<Oid, Vec<(Tid, Option<Bytes>)>> = BTreeMap::new();
    for t in history {
        for r in &t.records {
            m.entry(r.oid).or_default().push((t.header.tid, r.data.clone()));
        }
    }
    m
}

/// (3) Every `loadBefore` answer is consistent with the serial order of the final history:
/// the revision answered exists there (same tid, same data) below `before`; no newer revision
/// below `before` was already committed when the read was sent (for a read of an old revision,
/// `before` is a tid the client had seen, so every revision below it was); `end`, when given,
/// is the next revision's tid; and the data names a commit whose client did not see it fail or
/// get another tid.
pub fn reads_serializable(reads: &[Read], commits: &[Commit], finals: &[Final]) -> Vec<String> {
    let Some(reference) = finals.iter().find(|f| f.optimal) else { return Vec::new() };
    let revs = revisions(&reference.history);
    let by_name: BTreeMap<(u32, u64), &Commit> = commits.iter().map(|c| ((c.client, c.seq), c)).collect();
    let acked_at: BTreeMap<Tid, Duration> = commits
        .iter()
        .filter_map(|c| if let Outcome::Acked(t) = c.outcome { Some((t, c.ended)) } else { None })
        .collect();
    // Whether revision `tid` was surely committed when a read with bound `before` was sent.
    let committed_before = |tid: Tid, before: Tid, sent: Duration| {
        if before != Tid::MAX {
            return true;
        }
        acked_at.get(&tid).is_some_and(|at| *at < sent)
    };
    let mut v = Vec::new();
    for r in reads {
        let empty = Vec::new();
        let rs = revs.get(&r.oid).unwrap_or(&empty);
        let what = format!("c{} loadBefore({}, {}) sent at {:?}", r.client, r.oid, r.before, r.sent);
        match &r.answer {
            None => {
                if let Some((t, _)) =
                    rs.iter().find(|(t, _)| *t < r.before && committed_before(*t, r.before, r.sent))
                {
                    v.push(format!("invariant 3: {what} answered nothing, but revision {t} was committed"));
                }
            }
            Some((data, start, end)) => {
                let Some(i) = rs.iter().position(|(t, _)| t == start) else {
                    v.push(format!(
                        "invariant 3: {what} answered revision {start}, which {} does not have",
                        reference.name
                    ));
                    continue;
                };
                if *start >= r.before {
                    v.push(format!("invariant 3: {what} answered revision {start}, not below the bound"));
                }
                if rs[i].1.as_ref() != Some(data) {
                    v.push(format!(
                        "invariant 3: {what} answered {start} {data:?}, {} has {:?}",
                        reference.name, rs[i].1
                    ));
                }
                let next = rs.get(i + 1).map(|n| n.0);
                if let Some(n) = next {
                    if n < r.before && committed_before(n, r.before, r.sent) {
                        v.push(format!("invariant 3: {what} answered {start}, but {n} was committed already (stale read)"));
                    }
                }
                if let Some(e) = end {
                    if next != Some(*e) {
                        v.push(format!(
                            "invariant 3: {what} answered end {e}; the serial order gives {next:?}"
                        ));
                    }
                }
                if let Some(name) = parse_data(data) {
                    match by_name.get(&name).map(|c| &c.outcome) {
                        Some(Outcome::Acked(t)) if t != start => v.push(format!(
                            "invariant 3: {what} read {data:?} as {start}, its client was told {t}"
                        )),
                        Some(Outcome::Failed(why)) => {
                            v.push(format!("invariant 3: {what} read {data:?}, whose commit failed ({why})"))
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    v
}

/// (4) Tids strictly increase and never repeat: acknowledged tids are distinct, a commit
/// acknowledged before another began has the smaller tid (also across RAID restarts), and
/// every backend's history is in strictly increasing tid order.
pub fn tids_increase(commits: &[Commit], finals: &[Final]) -> Vec<String> {
    let mut v = Vec::new();
    let mut acked: Vec<(&Commit, Tid)> = commits
        .iter()
        .filter_map(|c| if let Outcome::Acked(t) = c.outcome { Some((c, t)) } else { None })
        .collect();
    let mut seen: BTreeMap<Tid, &Commit> = BTreeMap::new();
    for (c, t) in &acked {
        if let Some(o) = seen.insert(*t, c) {
            v.push(format!(
                "invariant 4: tid {t} acknowledged twice: c{} txn {} and c{} txn {}",
                o.client, o.seq, c.client, c.seq
            ));
        }
    }
    // Sweep by begin time: the largest tid acknowledged before each begin.
    acked.sort_by_key(|(c, _)| c.ended);
    let mut by_begin: Vec<&(&Commit, Tid)> = acked.iter().collect();
    by_begin.sort_by_key(|(c, _)| c.began);
    let mut i = 0;
    let mut max: Option<(Tid, Duration, u32, u64)> = None;
    for (c, t) in by_begin {
        while i < acked.len() && acked[i].0.ended < c.began {
            let (d, dt) = acked[i];
            if max.is_none_or(|m| dt > m.0) {
                max = Some((dt, d.ended, d.client, d.seq));
            }
            i += 1;
        }
        if let Some((mt, at, mc, ms)) = max {
            if *t <= mt {
                v.push(format!(
                    "invariant 4: c{} txn {} began at {:?} and got {t}, not above {mt} (c{mc} txn {ms}, acknowledged at {at:?})",
                    c.client, c.seq, c.began
                ));
            }
        }
    }
    for f in finals {
        for w in f.history.windows(2) {
            if w[1].header.tid <= w[0].header.tid {
                v.push(format!(
                    "invariant 4: {} holds {} after {}",
                    f.name, w[1].header.tid, w[0].header.tid
                ));
            }
        }
    }
    v
}

/// (6) Liveness: every client gets a commit acknowledged within `bound` after the healing,
/// and every backend is optimal at the end.
pub fn liveness(
    log: &Log,
    clients: usize,
    healed_at: Duration,
    bound: Duration,
    finals: &[Final],
) -> Vec<String> {
    let mut v = Vec::new();
    for c in 0..clients as u32 {
        let ok =
            log.acks.get(&c).is_some_and(|a| a.iter().any(|t| *t > healed_at && *t <= healed_at + bound));
        if !ok {
            v.push(format!("invariant 6: c{c} had no commit acknowledged within {bound:?} after the healing at {healed_at:?}"));
        }
    }
    for f in finals.iter().filter(|f| !f.optimal) {
        let state = log.last_states.get(&f.name).cloned().unwrap_or_else(|| "unknown".into());
        v.push(format!("invariant 6: {} is still {state} at the end (recovery did not converge)", f.name));
    }
    v
}
