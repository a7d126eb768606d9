//! The per-storage saver task: writes the RAID's state file off the driver task.
//!
//! The driver hands it every `SaveState`; only the newest pending one is written (a `watch`
//! channel keeps just the last value). After a write is durable the saver sends
//! `StateSaved { version }` back to the driver. A failed write is logged at error and retried
//! every [`RETRY`] (with the newest state by then) until it succeeds or the driver stops. The
//! task ends when the driver drops its sender, after finishing the write in progress.
//!
//! A real file is written in `spawn_blocking`; an in-memory one ([`StateFile::Mem`], the
//! simulation) is written inline on the task, so that nothing escapes the simulated world.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, Instrument};
use zeoraid_core::raid::PersistedRaid;
use zeoraid_core::zeo::events::StorageIdx;

use super::Event;
use crate::net::Net;
use crate::raid_state::StateFile;

/// Pause between attempts after a failed write.
pub(crate) const RETRY: Duration = Duration::from_secs(1);

type Pending = Option<(u64, PersistedRaid)>;

/// The driver's end.
pub(crate) struct SaverTx(watch::Sender<Pending>);

impl SaverTx {
    /// Replaces the pending state with this newer one.
    pub(crate) fn save(&self, version: u64, state: PersistedRaid) {
        self.0.send_replace(Some((version, state)));
    }
}

/// Starts the saver of `storage`. Without a file (tests) every state is acknowledged at once.
pub(crate) fn spawn<N: Net>(
    storage: StorageIdx,
    name: &str,
    file: Option<StateFile>,
    tx: mpsc::UnboundedSender<Event>,
) -> (SaverTx, tokio::task::JoinHandle<()>) {
    let (stx, rx) = watch::channel(None);
    let span = tracing::info_span!("raid_state", storage = %name);
    let task = N::spawn(run(storage, file, rx, tx).instrument(span));
    (SaverTx(stx), task)
}

async fn run(
    storage: StorageIdx,
    file: Option<StateFile>,
    mut rx: watch::Receiver<Pending>,
    tx: mpsc::UnboundedSender<Event>,
) {
    while rx.changed().await.is_ok() {
        let Some((mut version, mut state)) = rx.borrow_and_update().clone() else { continue };
        while let Some(f) = file.clone() {
            let r = if f.blocks() {
                let st = state.clone();
                tokio::task::spawn_blocking(move || f.save(&st)).await
            } else {
                Ok(f.save(&state))
            };
            match r {
                Ok(Ok(())) => {
                    debug!("state version {version} saved");
                    break;
                }
                Ok(Err(e)) => error!("{e}; retrying in {}s", RETRY.as_secs()),
                Err(e) => error!("saving the RAID state failed: {e}; retrying in {}s", RETRY.as_secs()),
            }
            tokio::time::sleep(RETRY).await;
            match rx.has_changed() {
                Ok(true) => {
                    if let Some((v, s)) = rx.borrow_and_update().clone() {
                        (version, state) = (v, s);
                    }
                }
                Ok(false) => {}
                Err(_) => {
                    info!("the driver has stopped; the state is saved at exit");
                    return;
                }
            }
        }
        let _ = tx.send(Event::StateSaved { storage, version });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{CrashMode, MemDir};
    use zeoraid_core::ids::{Oid, Tid};
    use zeoraid_core::raid::{BackendState, PersistedBackend};

    fn state(last: u64) -> PersistedRaid {
        PersistedRaid {
            backends: vec![PersistedBackend { name: "a".into(), state: BackendState::Optimal }],
            last_tid: Tid::new(last),
            acked_tid: Tid::new(last),
            oid_hwm: Oid::new(10),
            recovery: None,
            last_optimal: None,
        }
    }

    /// In memory the saver writes on its own task, and what it acknowledged survives a crash.
    #[tokio::test(flavor = "current_thread")]
    async fn an_in_memory_state_is_saved_inline_and_acknowledged_once_durable() {
        let dir = MemDir::new();
        let file = StateFile::Mem { dir: dir.clone(), name: "1.raid-state".into() };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (saver, task) = spawn::<crate::net::TokioNet>(StorageIdx(0), "1", Some(file), tx);
        saver.save(1, state(5));
        let ev = rx.recv().await.expect("acknowledged");
        assert!(matches!(ev, Event::StateSaved { storage: StorageIdx(0), version: 1 }));
        let crashed = StateFile::Mem { dir: dir.crash(CrashMode::DropUnsynced), name: "1.raid-state".into() };
        assert_eq!(crashed.load().expect("loads"), Some(state(5)));
        saver.save(2, state(6));
        let ev = rx.recv().await.expect("acknowledged");
        assert!(matches!(ev, Event::StateSaved { version: 2, .. }));
        drop(saver);
        task.await.expect("ends");
        let crashed = StateFile::Mem { dir: dir.crash(CrashMode::DropUnsynced), name: "1.raid-state".into() };
        assert_eq!(crashed.load().expect("loads"), Some(state(6)));
    }
}
