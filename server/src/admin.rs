//! The admin endpoint: a unix socket (owner-only, never the ZEO port) for `zeoraid status`,
//! `details`, `disable`, `recover` and `reload`.
//!
//! Protocol: the client sends one JSON object on one line, the server answers one JSON object
//! on one line and closes the connection.
//!
//! ```text
//! → {"cmd":"status"}     {"cmd":"details"}     {"cmd":"reload"}
//! → {"cmd":"disable","name":"b"}               {"cmd":"disable","storage":"1","name":"b"}
//! → {"cmd":"recover","backend":"b"}            {"cmd":"recover","storage":"1","backend":"b","rate_bytes":20000000,"rate_txns":0}
//! ← {"ok":true,"status":"degraded","storages":[{"name":"1","status":"degraded","backends":[…]}],"notes":[]}
//! ← {"ok":false,"error":"\"a\" is the last optimal backend; refusing to take it out"}
//! ```
//!
//! `recover`'s `rate_bytes` / `rate_txns` override the storage's configured limit for that run
//! (0: no limit on that measure); a measure left out keeps the configured limit. In `status`
//! and `details` replies each storage carries `recovery` (the running recovery's progress, see
//! [`RecoveryReport`]) and `last_recovery` (how the last one ended, [`RecoveryEndReport`]) when
//! there is one, and `broken_invariant` when the RAID's own invariant checker finds one broken
//! (a zeoraid bug; the simulation suite watches it).
//!
//! Requests are answered by the driver task (the RAIDs live there) through
//! [`AdminSender`]. `reload` re-reads the configuration file the server was started with (with
//! the same command-line overrides): a file that does not load changes nothing and the reply
//! carries its error; otherwise the driver validates every change before applying any (see
//! `driver::raids`). `[server]` changes are not applied; the reply says they need a restart.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};
use zeoraid_core::raid::{BackendDetails, BackendState, RateLimit, RecoveryEnd, RecoveryProgress};

use crate::config::{Config, ListenAddr, ServerSettings, StorageSettings};
use crate::driver::AdminSender;
use crate::net::Listener;

/// Longest request line accepted.
pub const MAX_REQUEST: usize = 64 << 10;
/// How long a client may take to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A request line, as sent on the socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
pub enum Command {
    /// The worst RAID status (and every storage's).
    Status,
    /// Every backend of every storage.
    Details,
    /// Take a backend out (`storage` may be left out when there is one storage).
    Disable {
        /// The storage.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        storage: Option<String>,
        /// The backend.
        name: String,
    },
    /// Re-read the configuration file.
    Reload,
    /// Rebuild a backend from an optimal one (`storage` may be left out when there is one).
    Recover {
        /// The storage.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        storage: Option<String>,
        /// The backend.
        #[serde(alias = "name")]
        backend: String,
        /// Bytes/s for this run (0: no limit); absent: the configured limit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rate_bytes: Option<u64>,
        /// Transactions/s for this run (0: no limit); absent: the configured limit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rate_txns: Option<u64>,
    },
}

/// The limit of a `recover` run: `rate_bytes` / `rate_txns` override `configured` measure by
/// measure (0 lifts that measure's limit); `None` when neither is given (the RAID then applies
/// its configured default itself).
pub fn recover_limit(
    configured: RateLimit,
    rate_bytes: Option<u64>,
    rate_txns: Option<u64>,
) -> Option<RateLimit> {
    if rate_bytes.is_none() && rate_txns.is_none() {
        return None;
    }
    let pick = |given: Option<u64>, conf: Option<u64>| match given {
        Some(0) => None,
        Some(n) => Some(n),
        None => conf,
    };
    Some(RateLimit {
        bytes_per_sec: pick(rate_bytes, configured.bytes_per_sec),
        txns_per_sec: pick(rate_txns, configured.txns_per_sec),
    })
}

/// Parses a request line.
pub fn parse_command(line: &str) -> Result<Command, String> {
    serde_json::from_str(line.trim()).map_err(|e| format!("bad request: {e}"))
}

/// What the driver is asked (a [`Command`], with `reload`'s file already read).
#[derive(Debug, Clone)]
pub enum AdminRequest {
    /// See [`Command::Status`].
    Status,
    /// See [`Command::Details`].
    Details,
    /// See [`Command::Disable`].
    Disable {
        /// The storage (`None`: the only one).
        storage: Option<String>,
        /// The backend.
        name: String,
    },
    /// See [`Command::Recover`].
    Recover {
        /// The storage (`None`: the only one).
        storage: Option<String>,
        /// The backend.
        backend: String,
        /// Bytes/s override (0: no limit).
        rate_bytes: Option<u64>,
        /// Transactions/s override (0: no limit).
        rate_txns: Option<u64>,
    },
    /// Apply these storages (from the re-read file); `notes` go into the reply.
    Reload {
        /// The storages of the file.
        storages: Vec<StorageSettings>,
        /// What the admin side noticed (server changes needing a restart).
        notes: Vec<String>,
    },
}

/// The reply line.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AdminReply {
    /// Whether the command succeeded.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The worst status over the storages (`status`, `details`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Every storage (`status`, `details`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storages: Vec<StorageReport>,
    /// What was done, or what needs a restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl AdminReply {
    /// A success with nothing in it yet.
    pub fn ok() -> AdminReply {
        AdminReply { ok: true, ..AdminReply::default() }
    }

    /// A failure.
    pub fn error(message: impl Into<String>) -> AdminReply {
        AdminReply { ok: false, error: Some(message.into()), ..AdminReply::default() }
    }
}

/// One storage in a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageReport {
    /// Its name.
    pub name: String,
    /// Its RAID status word.
    pub status: String,
    /// Its backends, in id order.
    pub backends: Vec<BackendReport>,
    /// The recovery running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryReport>,
    /// How the last recovery ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recovery: Option<RecoveryEndReport>,
    /// The first of the RAID's internal invariants found broken when the report was made (its
    /// state machine's own checker, `Raid::check`), `None` when they all hold: a bug of
    /// zeoraid, to report with the server's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken_invariant: Option<String>,
}

/// A running recovery in a reply (see [`RecoveryProgress`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryReport {
    /// The backend being recovered.
    pub target: String,
    /// The optimal backend it is copied from.
    pub source: String,
    /// `verifying`, `rebuilding`, `copying` or `switching`.
    pub phase: String,
    /// The newest transaction verified or copied, in hex.
    pub current_tid: String,
    /// Transactions verified.
    pub txns_verified: u64,
    /// Transactions copied.
    pub txns_copied: u64,
    /// Bytes copied (record data and blobs).
    pub bytes_copied: u64,
    /// Transactions left, estimated.
    #[serde(default)]
    pub txns_left: Option<u64>,
    /// Bytes left, estimated.
    #[serde(default)]
    pub bytes_left: Option<u64>,
    /// Transactions per second lately.
    pub txns_per_sec: f64,
    /// Bytes per second lately.
    pub bytes_per_sec: f64,
    /// Seconds left, estimated.
    #[serde(default)]
    pub eta_secs: Option<f64>,
    /// The bytes/s limit in force (`None`: none).
    #[serde(default)]
    pub limit_bytes: Option<u64>,
    /// The transactions/s limit in force (`None`: none).
    #[serde(default)]
    pub limit_txns: Option<u64>,
    /// When it started (epoch seconds).
    pub started: f64,
}

impl From<RecoveryProgress> for RecoveryReport {
    fn from(p: RecoveryProgress) -> RecoveryReport {
        RecoveryReport {
            target: p.target,
            source: p.source,
            phase: p.phase.word().to_string(),
            current_tid: format!("{:016x}", p.current_tid.get()),
            txns_verified: p.txns_verified,
            txns_copied: p.txns_copied,
            bytes_copied: p.bytes_copied,
            txns_left: p.txns_left,
            bytes_left: p.bytes_left,
            txns_per_sec: finite(p.txns_per_sec),
            bytes_per_sec: finite(p.bytes_per_sec),
            eta_secs: p.eta_secs.filter(|e| e.is_finite()),
            limit_bytes: p.limit.bytes_per_sec,
            limit_txns: p.limit.txns_per_sec,
            started: p.started,
        }
    }
}

/// JSON has no NaN or infinity.
fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// How a recovery ended, in a reply (see [`RecoveryEnd`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryEndReport {
    /// The backend.
    pub target: String,
    /// `true`: it is optimal now.
    pub ok: bool,
    /// Why it failed.
    #[serde(default)]
    pub failure: Option<String>,
    /// When (epoch seconds).
    pub at: f64,
    /// Transactions copied.
    pub txns_copied: u64,
    /// Bytes copied.
    pub bytes_copied: u64,
}

impl From<&RecoveryEnd> for RecoveryEndReport {
    fn from(e: &RecoveryEnd) -> RecoveryEndReport {
        RecoveryEndReport {
            target: e.target.clone(),
            ok: e.failure.is_none(),
            failure: e.failure.clone(),
            at: e.at,
            txns_copied: e.txns_copied,
            bytes_copied: e.bytes_copied,
        }
    }
}

/// One backend in a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendReport {
    /// Its name.
    pub name: String,
    /// What it is (`local var/a/Data.fs`).
    pub label: String,
    /// Its state word.
    pub state: String,
    /// Why it is degraded.
    #[serde(default)]
    pub reason: Option<String>,
    /// Since when it is in this state (seconds since the epoch; `None` for optimal).
    #[serde(default)]
    pub since: Option<f64>,
    /// Its last tid, in hex (`None` if never seen).
    #[serde(default)]
    pub last_tid: Option<String>,
    /// Whether its connection is up.
    pub connected: bool,
    /// Requests in flight.
    pub outstanding: usize,
}

impl From<BackendDetails> for BackendReport {
    fn from(d: BackendDetails) -> BackendReport {
        let (reason, since) = match &d.state {
            BackendState::Optimal => (None, None),
            BackendState::Degraded { reason, since } => (Some(reason.clone()), Some(*since)),
            BackendState::Disabled { since } => (Some("disabled by the operator".to_string()), Some(*since)),
            BackendState::Recovering { since } => (None, Some(*since)),
        };
        BackendReport {
            name: d.name,
            label: d.label,
            state: d.state.word().to_string(),
            reason,
            since,
            last_tid: d.last_tid.map(|t| format!("{:016x}", t.get())),
            connected: d.connected,
            outstanding: d.outstanding,
        }
    }
}

/// What the endpoint needs to handle `reload`: the file the server was started with and the
/// command-line overrides applied to it, and the `[server]` settings in force.
#[derive(Debug, Clone)]
pub struct ReloadSource {
    /// The configuration file (`None`: started without one; `reload` is refused).
    pub file: Option<PathBuf>,
    /// `--listen` as given.
    pub listen: Vec<ListenAddr>,
    /// `--data` as given.
    pub data: Option<PathBuf>,
    /// The `[server]` settings in force.
    pub server: ServerSettings,
}

impl ReloadSource {
    /// Reads the file again with the same overrides (blocking: run it off the driver).
    pub fn load(&self) -> Result<Config, String> {
        let Some(file) = &self.file else {
            return Err(
                "no config file: the server was started without --config, there is nothing to reload"
                    .to_string(),
            );
        };
        let mut cfg = Config::load(file).map_err(|e| e.to_string())?;
        if let Some(d) = &self.data {
            cfg.override_data(d).map_err(|e| e.to_string())?;
        }
        cfg.override_listen(self.listen.clone()).map_err(|e| e.to_string())?;
        Ok(cfg)
    }
}

/// Serves the admin socket until the task is dropped (aborted).
pub async fn serve<L: Listener>(mut listener: L, driver: AdminSender, source: ReloadSource) {
    info!("admin endpoint on {}", listener.local_addr());
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let (driver, source) = (driver.clone(), source.clone());
                tokio::spawn(async move {
                    if let Err(e) = one(stream, &driver, &source).await {
                        debug!("admin connection: {e}");
                    }
                });
            }
            Err(e) => {
                warn!("admin endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One connection: one request line, one reply line.
async fn one<S>(stream: S, driver: &AdminSender, source: &ReloadSource) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (r, mut w) = tokio::io::split(stream);
    let mut r = tokio::io::BufReader::new(r).take(MAX_REQUEST as u64 + 1);
    let mut line = Vec::new();
    let read = tokio::time::timeout(REQUEST_TIMEOUT, r.read_until(b'\n', &mut line)).await;
    let reply = match read {
        Err(_) => AdminReply::error("no request line within the time limit"),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(_)) if line.len() > MAX_REQUEST => AdminReply::error("request line too long"),
        Ok(Ok(_)) => match std::str::from_utf8(&line).map_err(|_| "bad request: not UTF-8".to_string()) {
            Ok(text) => match parse_command(text) {
                Ok(cmd) => answer(cmd, driver, source).await,
                Err(e) => AdminReply::error(e),
            },
            Err(e) => AdminReply::error(e),
        },
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    out.push(b'\n');
    w.write_all(&out).await?;
    w.shutdown().await
}

async fn answer(cmd: Command, driver: &AdminSender, source: &ReloadSource) -> AdminReply {
    let request = match cmd {
        Command::Status => AdminRequest::Status,
        Command::Details => AdminRequest::Details,
        Command::Disable { storage, name } => {
            info!("admin: disable {name}");
            AdminRequest::Disable { storage, name }
        }
        Command::Recover { storage, backend, rate_bytes, rate_txns } => {
            info!("admin: recover {backend}");
            AdminRequest::Recover { storage, backend, rate_bytes, rate_txns }
        }
        Command::Reload => {
            info!("admin: reload");
            let src = source.clone();
            let cfg = match tokio::task::spawn_blocking(move || src.load()).await {
                Ok(Ok(cfg)) => cfg,
                Ok(Err(e)) => {
                    warn!("reload refused: {e}");
                    return AdminReply::error(e);
                }
                Err(e) => return AdminReply::error(format!("reading the configuration failed: {e}")),
            };
            let mut notes = Vec::new();
            if cfg.server != source.server {
                notes.push("[server] changed: those settings take effect at the next restart".to_string());
            }
            AdminRequest::Reload { storages: cfg.storages, notes }
        }
    };
    match driver.ask(request).await {
        Some(reply) => {
            if let Some(e) = &reply.error {
                warn!("admin request refused: {e}");
            }
            reply
        }
        None => AdminReply::error("the server is shutting down"),
    }
}

/// The admin socket cannot be used (the CLI exits 3 on this: "UNKNOWN").
#[derive(Debug, thiserror::Error)]
#[error("admin socket {path}: {what}")]
pub struct ClientError {
    /// The socket.
    pub path: String,
    /// What went wrong.
    pub what: String,
}

/// Sends `cmd` to the admin socket at `path` and reads the reply (blocking; for the CLI).
#[cfg(unix)]
pub fn request(path: &Path, cmd: &Command, timeout: Duration) -> Result<AdminReply, ClientError> {
    let err = |what: String| ClientError { path: path.display().to_string(), what };
    let mut s =
        std::os::unix::net::UnixStream::connect(path).map_err(|e| err(format!("cannot connect: {e}")))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| err(e.to_string()))?;
    s.set_write_timeout(Some(timeout)).map_err(|e| err(e.to_string()))?;
    let mut line = serde_json::to_vec(cmd).map_err(|e| err(e.to_string()))?;
    line.push(b'\n');
    s.write_all(&line).map_err(|e| err(format!("cannot send the request: {e}")))?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).map_err(|e| err(format!("no reply: {e}")))?;
    if reply.is_empty() {
        return Err(err("the server closed the connection without a reply".to_string()));
    }
    serde_json::from_str(&reply).map_err(|e| err(format!("unreadable reply: {e}")))
}

/// Not available here.
#[cfg(not(unix))]
pub fn request(path: &Path, _cmd: &Command, _timeout: Duration) -> Result<AdminReply, ClientError> {
    Err(ClientError { path: path.display().to_string(), what: "no unix sockets here".to_string() })
}

/// One line of `recover --wait`, `details` and the driver's progress log: where the running recovery is.
pub fn progress_line(r: &RecoveryReport) -> String {
    let mut line = format!(
        "recovering {} from {}: {}, tid {}, verified {} txn(s), copied {} txn(s) / {}",
        r.target,
        r.source,
        r.phase,
        r.current_tid,
        r.txns_verified,
        r.txns_copied,
        human_bytes(r.bytes_copied as f64)
    );
    match (r.txns_left, r.bytes_left) {
        (Some(t), Some(b)) => line.push_str(&format!(", left ~{t} txn(s) / {}", human_bytes(b as f64))),
        (Some(t), None) => line.push_str(&format!(", left ~{t} txn(s)")),
        (None, Some(b)) => line.push_str(&format!(", left ~{}", human_bytes(b as f64))),
        (None, None) => {}
    }
    line.push_str(&format!(", {:.0} txn/s {}/s", r.txns_per_sec, human_bytes(r.bytes_per_sec)));
    if let Some(eta) = r.eta_secs {
        line.push_str(&format!(", ETA {}", human_secs(eta)));
    }
    let limit = RateLimit { bytes_per_sec: r.limit_bytes, txns_per_sec: r.limit_txns };
    line.push_str(&format!(", limit {limit}"));
    line
}

/// `1.5 MB`, decimal units.
pub fn human_bytes(b: f64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = if b.is_finite() && b > 0.0 { b } else { 0.0 };
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// `42s`, `3m07s`, `2h05m`.
pub fn human_secs(s: f64) -> String {
    let s = if s.is_finite() && s > 0.0 { s.round() as u64 } else { 0 };
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// `since` as UTC ISO 8601 (`2026-11-25T20:31:05Z`).
pub fn iso_utc(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".to_string();
    }
    let t = secs as i64;
    let (days, rem) = (t.div_euclid(86400), t.rem_euclid(86400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_command("{\"cmd\":\"status\"}\n"), Ok(Command::Status));
        assert_eq!(parse_command("{\"cmd\":\"details\"}"), Ok(Command::Details));
        assert_eq!(parse_command("{\"cmd\":\"reload\"}"), Ok(Command::Reload));
        assert_eq!(
            parse_command("{\"cmd\":\"disable\",\"name\":\"b\"}"),
            Ok(Command::Disable { storage: None, name: "b".into() })
        );
        assert_eq!(
            parse_command("{\"cmd\":\"disable\",\"storage\":\"1\",\"name\":\"b\"}"),
            Ok(Command::Disable { storage: Some("1".into()), name: "b".into() })
        );
        assert_eq!(
            parse_command("{\"cmd\":\"recover\",\"backend\":\"b\",\"rate_txns\":50}"),
            Ok(Command::Recover {
                storage: None,
                backend: "b".into(),
                rate_bytes: None,
                rate_txns: Some(50)
            })
        );
        assert_eq!(
            parse_command("{\"cmd\":\"recover\",\"storage\":\"1\",\"name\":\"c\"}"),
            Ok(Command::Recover {
                storage: Some("1".into()),
                backend: "c".into(),
                rate_bytes: None,
                rate_txns: None
            })
        );
        for bad in [
            "{\"cmd\":\"recover\",\"backend\":\"b\",\"rate_bytes\":-1}",
            "{\"cmd\":\"recover\",\"backend\":\"b\",\"rate_bytes\":\"20MB\"}",
            "{\"cmd\":\"recover\",\"backend\":\"b\",\"rate\":1}",
            "",
            "status",
            "{}",
            "{\"cmd\":\"recover\"}",
            "{\"cmd\":\"disable\"}",
            "{\"cmd\":\"disable\",\"name\":\"b\",\"x\":1}",
            "[1]",
        ] {
            let e = parse_command(bad).expect_err(bad);
            assert!(e.starts_with("bad request"), "{e}");
        }
    }

    #[test]
    fn commands_roundtrip_as_the_cli_sends_them() {
        for c in [
            Command::Status,
            Command::Details,
            Command::Reload,
            Command::Disable { storage: Some("1".into()), name: "a".into() },
            Command::Disable { storage: None, name: "a".into() },
            Command::Recover { storage: None, backend: "b".into(), rate_bytes: None, rate_txns: None },
            Command::Recover {
                storage: Some("1".into()),
                backend: "b".into(),
                rate_bytes: Some(20_000_000),
                rate_txns: Some(0),
            },
        ] {
            let line = serde_json::to_string(&c).expect("encode");
            assert_eq!(parse_command(&line), Ok(c));
        }
    }

    #[test]
    fn replies_roundtrip() {
        let r = AdminReply {
            status: Some("degraded".into()),
            storages: vec![StorageReport {
                name: "1".into(),
                status: "degraded".into(),
                backends: vec![BackendReport::from(BackendDetails {
                    name: "b".into(),
                    label: "local var/b/Data.fs".into(),
                    state: BackendState::Degraded { reason: "timed out".into(), since: 1.5e9 },
                    connected: false,
                    last_tid: Some(zeoraid_core::ids::Tid::new(0x03ff)),
                    outstanding: 0,
                })],
                recovery: None,
                last_recovery: None,
                broken_invariant: None,
            }],
            ..AdminReply::ok()
        };
        let b = &r.storages[0].backends[0];
        assert_eq!(
            (b.reason.as_deref(), b.last_tid.as_deref()),
            (Some("timed out"), Some("00000000000003ff"))
        );
        let line = serde_json::to_string(&r).expect("encode");
        assert_eq!(serde_json::from_str::<AdminReply>(&line).expect("decode"), r);
        let e = AdminReply::error("no");
        assert_eq!(
            serde_json::from_str::<AdminReply>(&serde_json::to_string(&e).expect("enc")).expect("dec"),
            e
        );
    }

    #[test]
    fn a_rate_override_replaces_the_configured_limit_measure_by_measure() {
        let conf = RateLimit { bytes_per_sec: Some(1000), txns_per_sec: Some(10) };
        assert_eq!(recover_limit(conf, None, None), None, "the RAID applies its default");
        assert_eq!(
            recover_limit(conf, Some(5), None),
            Some(RateLimit { bytes_per_sec: Some(5), txns_per_sec: Some(10) })
        );
        assert_eq!(
            recover_limit(conf, Some(0), Some(0)),
            Some(RateLimit::UNLIMITED),
            "0 lifts the configured limit"
        );
        assert_eq!(
            recover_limit(RateLimit::UNLIMITED, None, Some(7)),
            Some(RateLimit { bytes_per_sec: None, txns_per_sec: Some(7) })
        );
    }

    #[test]
    fn recovery_reports_carry_the_progress_and_survive_json() {
        use zeoraid_core::ids::Tid;
        use zeoraid_core::raid::RecoveryPhase;
        let p = RecoveryProgress {
            target: "b".into(),
            source: "a".into(),
            phase: RecoveryPhase::Copying,
            current_tid: Tid::new(0x03ff_0000_0000_0042),
            txns_verified: 10,
            txns_copied: 2000,
            bytes_copied: 5_000_000,
            txns_left: Some(500),
            bytes_left: None,
            txns_per_sec: 250.0,
            bytes_per_sec: f64::NAN,
            eta_secs: Some(f64::INFINITY),
            limit: RateLimit { bytes_per_sec: Some(20_000_000), txns_per_sec: None },
            started: 1.75e9,
        };
        let r = RecoveryReport::from(p);
        assert_eq!((r.phase.as_str(), r.current_tid.as_str()), ("copying", "03ff000000000042"));
        assert_eq!((r.bytes_per_sec, r.eta_secs, r.limit_bytes), (0.0, None, Some(20_000_000)));
        let end = RecoveryEndReport::from(&RecoveryEnd {
            target: "b".into(),
            failure: Some("the target went down".into()),
            at: 1.76e9,
            txns_copied: 3,
            bytes_copied: 4,
        });
        assert!(!end.ok);
        let report = StorageReport {
            name: "1".into(),
            status: "recovering".into(),
            backends: Vec::new(),
            recovery: Some(r),
            last_recovery: Some(end),
            broken_invariant: None,
        };
        let line = serde_json::to_string(&report).expect("encode");
        assert!(line.contains("\"phase\":\"copying\"") && line.contains("\"ok\":false"), "{line}");
        assert_eq!(serde_json::from_str::<StorageReport>(&line).expect("decode"), report);
    }

    #[test]
    fn progress_reads_well() {
        let r = RecoveryReport {
            target: "b".into(),
            source: "a".into(),
            phase: "copying".into(),
            current_tid: "03ff000000000042".into(),
            txns_verified: 10,
            txns_copied: 2000,
            bytes_copied: 5_250_000,
            txns_left: Some(500),
            bytes_left: Some(1_500_000),
            txns_per_sec: 250.4,
            bytes_per_sec: 650_000.0,
            eta_secs: Some(125.0),
            limit_bytes: None,
            limit_txns: Some(300),
            started: 0.0,
        };
        assert_eq!(
            progress_line(&r),
            "recovering b from a: copying, tid 03ff000000000042, verified 10 txn(s), copied 2000 txn(s) / \
             5.2 MB, left ~500 txn(s) / 1.5 MB, 250 txn/s 650.0 kB/s, ETA 2m05s, limit 300 txns/s"
        );
        assert_eq!(
            (human_bytes(999.0), human_bytes(f64::NAN), human_bytes(2e12)),
            ("999 B".into(), "0 B".into(), "2.0 TB".into())
        );
        assert_eq!(
            (human_secs(59.4), human_secs(7300.0), human_secs(-1.0)),
            ("59s".into(), "2h01m".into(), "0s".into())
        );
    }

    #[test]
    fn iso_dates() {
        assert_eq!(iso_utc(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_utc(951_782_400.0), "2000-02-29T00:00:00Z");
        assert_eq!(iso_utc(1_795_636_265.9), "2026-11-25T19:51:05Z");
        assert_eq!(iso_utc(f64::NAN), "-");
    }
}
