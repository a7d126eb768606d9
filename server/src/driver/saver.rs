//! The per-storage saver task: writes the RAID's state file off the driver task.
//!
//! The driver hands it every `SaveState`; only the newest pending one is written (a `watch`
//! channel keeps just the last value). After a write is durable the saver sends
//! `StateSaved { version }` back to the driver. A failed write is logged at error and retried
//! every [`RETRY`] (with the newest state by then) until it succeeds or the driver stops. The
//! task ends when the driver drops its sender, after finishing the write in progress.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, Instrument};
use zeoraid_core::raid::PersistedRaid;
use zeoraid_core::zeo::events::StorageIdx;

use super::Event;
use crate::raid_state;

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
pub(crate) fn spawn(
    storage: StorageIdx,
    name: &str,
    file: Option<PathBuf>,
    tx: mpsc::UnboundedSender<Event>,
) -> (SaverTx, tokio::task::JoinHandle<()>) {
    let (stx, rx) = watch::channel(None);
    let span = tracing::info_span!("raid_state", storage = %name);
    let task = tokio::spawn(run(storage, file, rx, tx).instrument(span));
    (SaverTx(stx), task)
}

async fn run(
    storage: StorageIdx,
    file: Option<PathBuf>,
    mut rx: watch::Receiver<Pending>,
    tx: mpsc::UnboundedSender<Event>,
) {
    while rx.changed().await.is_ok() {
        let Some((mut version, mut state)) = rx.borrow_and_update().clone() else { continue };
        while let Some(path) = file.clone() {
            let st = state.clone();
            let r = tokio::task::spawn_blocking(move || raid_state::save(&path, &st)).await;
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
