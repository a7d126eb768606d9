//! A long, varied history built through a running server with stock ZEO clients
//! (tests/python/build_history.py): bulk transactions from several clients, blobs with several
//! revisions, undo records with back-pointers, and a pack half-way.

use std::time::Duration;

use crate::python::{scripts_dir, PythonEnv};
use crate::server::{run_with_deadline, ServerError, ServerProcess};

/// How long build_history.py may take.
const BUILD_DEADLINE: Duration = Duration::from_secs(300);

/// What build_history.py committed.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// Transactions committed.
    pub transactions: u64,
    /// Undo transactions among them.
    pub undos: u64,
    /// Blob revisions written.
    pub blob_revisions: u64,
    /// How long it took, seconds.
    pub seconds: f64,
}

/// Commits transactions through `server` (see the module doc) so that at least `transactions`
/// are left after its pack;
/// `undo_blobs` also undoes blob revisions (only for RAIDs whose backends are all local: stock
/// ZEO has no restoreBlob, so a copied blob back-pointer is not kept on a remote backend).
pub fn build_history(
    server: &ServerProcess,
    transactions: u64,
    undo_blobs: bool,
) -> Result<History, ServerError> {
    let cache = server.dir().join("history-blob-cache");
    let mut cmd = PythonEnv::get().command();
    cmd.arg(scripts_dir().join("build_history.py"))
        .arg(server.address_arg())
        .arg(transactions.to_string())
        .arg(&cache);
    if undo_blobs {
        cmd.arg("--undo-blobs");
    }
    let out = run_with_deadline(cmd, BUILD_DEADLINE)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let failed = |what: String| ServerError::Check {
        what,
        details: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
    };
    if !out.status.success() {
        return Err(failed(format!("build_history.py failed ({})", out.status)));
    }
    let v: serde_json::Value = serde_json::from_str(stdout.trim())
        .map_err(|e| failed(format!("build_history.py printed no JSON ({e})")))?;
    let count = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    Ok(History {
        transactions: count("transactions"),
        undos: count("undos"),
        blob_revisions: count("blob_revisions"),
        seconds: v.get("seconds").and_then(serde_json::Value::as_f64).unwrap_or(0.0),
    })
}
