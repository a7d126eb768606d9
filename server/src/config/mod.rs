//! The configuration of `zeoraid serve`: a TOML file, defaults, and command-line overrides.
//!
//! ```toml
//! [server]
//! listen = ["127.0.0.1:8100", "unix:/run/zeoraid/zeo.sock"]  # default ["127.0.0.1:8100"]
//! encoding = "pickle"           # or "msgpack": the handshake announced (Z5 / M5)
//! read_only = false
//! transaction_timeout = 30      # seconds (float ok); absent = no limit
//! invalidation_queue_size = 100
//! max_frame = 1073741824        # bytes
//! max_output = 268435456        # bytes queued for a client that does not read, before it is closed
//! shutdown_grace = 10           # seconds
//! admin = "var/admin.sock"      # the admin unix socket (never the ZEO port); default
//!                               # admin.sock next to this file
//!
//! [[storage]]                   # one or more; each is a RAID of its backends
//! name = "1"                    # the name clients give to `register`
//! state_file = "var/1.raid-state"  # the RAID's state; default <name>.raid-state next to the
//!                               # first local backend's Data.fs, else next to this file
//! call_timeout = 10             # seconds a backend may take for one read
//! write_timeout = 30            # ... for a vote, finish or abort
//! connect_timeout = 5           # ... to connect and register (remote), at start and reconnect
//! recovery_rate_bytes = "20MB"  # `zeoraid recover`'s default limit: bytes (record data and
//!                               # blobs) copied per second; an integer or a string with a unit
//!                               # (kB, MB, GB: powers of 1000; KiB, MiB, GiB: of 1024); absent =
//!                               # no limit. `recover --rate-bytes` overrides it per run
//! recovery_rate_txns = 500      # ... transactions copied per second; absent = no limit (both
//!                               # limits apply together)
//! switch_max_lag = 20           # the recovery takes the commit lock for its last step only
//!                               # when the target is at most this many transactions behind
//! switch_timeout = 2            # seconds that last step may hold the commit lock; past it the
//!                               # lock is released and the recovery catches up again
//!
//!   [[storage.backend]]         # one or more
//!   name = "a"                  # unique within the storage
//!   path = "var/a/Data.fs"      # a local FileStorage; relative paths are relative to this
//!   blob_dir = "var/a/blobs"    # file's directory. Optional: no blobs without it
//!   read_only = false
//!   fsync = true
//!   read_threads = 2
//!
//!   [[storage.backend]]
//!   name = "b"
//!   zeo = "127.0.0.1:8101"      # a remote ZEO server (HOST:PORT, resolved when the
//!                               # file is read, or unix:PATH)
//!   storage = "1"               # the storage to register there (default "1")
//!   read_only = false
//! ```
//!
//! A backend has exactly one of `path` and `zeo`. The older single-storage form, with `path`,
//! `blob_dir`, `read_only`, `fsync` and `read_threads` directly in `[[storage]]`, stays valid: it
//! is a RAID of one local backend named `local`.
//!
//! Every error names the file, the line and column, and the key (`zeoraid.toml:7:8:
//! server.listen: …`). Unknown keys and tables are errors.
//!
//! # Path rules
//! * A writable local backend's `path` need not exist (it is created), but the directory that
//!   will hold it must either exist or be creatable: its nearest existing ancestor must be a
//!   directory. `serve` creates the missing directories ([`Config::create_dirs`]). `path`
//!   itself must not be a directory. A `Data.fs` is used by one backend only.
//! * A read-only local backend's `path` must exist (nothing is created for it).
//! * `blob_dir`, when it exists, must be a directory; otherwise the same rule as `path`'s
//!   directory applies.
//!
//! # Without a file, and overrides
//! Without a config file, storage `1` is a RAID of two local backends, `a` (`<data>/a/Data.fs`,
//! blobs in `<data>/a/blobs`) and `b` (likewise under `<data>/b`), its state in
//! `<data>/1.raid-state`, the admin socket `<data>/admin.sock`; `data` is `./var` unless
//! `--data DIR` says otherwise; it listens on `127.0.0.1:8100` unless `--listen` says
//! otherwise. `--listen ADDR` (repeatable) replaces the `listen` list of the file. `--data DIR`
//! with a file is accepted only when the file has exactly one storage with one local backend:
//! its `path` becomes `DIR/Data.fs` and, if it keeps blobs, its `blob_dir` becomes `DIR/blobs`
//! (and a default state file moves to `DIR`); otherwise `--data` is an error (it could not say
//! which backend it means).

mod locate;
pub mod rate;
mod storage;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use zeoraid_core::wire::Encoding;
use zeoraid_core::zeo::events::{ServerConfig, StorageSeed};

pub use storage::{
    BackendKind, BackendSettings, LocalSettings, StorageSettings, ZeoSettings, DEFAULT_CALL_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_REMOTE_STORAGE, DEFAULT_SWITCH_MAX_LAG, DEFAULT_SWITCH_TIMEOUT,
    DEFAULT_WRITE_TIMEOUT, SINGLE_BACKEND,
};

/// The default listen address (ZEO's usual port).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8100";
/// The default storage name (ZEO's default).
pub const DEFAULT_STORAGE: &str = "1";
/// The default data directory, relative to the working directory.
pub const DEFAULT_DATA: &str = "var";
/// The default largest frame accepted from a client: 1 GiB.
pub const DEFAULT_MAX_FRAME: u32 = 1 << 30;
/// The default `max_output`: 256 MiB.
pub const DEFAULT_MAX_OUTPUT: usize = 256 << 20;
/// The admin socket's file name (in the data directory, or next to the config file).
pub const ADMIN_SOCKET: &str = "admin.sock";
/// The smallest `max_output` accepted.
pub const MIN_MAX_OUTPUT: usize = 64 << 10;

/// The smallest `max_frame` accepted (a handshake and a small call must fit).
pub const MIN_MAX_FRAME: u32 = 4096;
/// The most threads a storage may serve reads with.
pub const MAX_READ_THREADS: usize = 256;
/// Reader threads per local storage when the config does not say: reads are short (the index is
/// in memory, the data usually in the page cache), so a few threads keep up with many clients
/// and more only add wake-ups.
pub const DEFAULT_READ_THREADS: usize = 2;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ListenAddr {
    /// A TCP address, `host:port` with a numeric host (`127.0.0.1:8100`, `[::1]:8100`).
    Tcp(SocketAddr),
    /// A unix-domain socket, written `unix:PATH`.
    Unix(PathBuf),
}

/// A listen address that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a listen address: expected IP:PORT (e.g. 127.0.0.1:8100 or [::1]:8100) or unix:PATH")]
pub struct BadListenAddr(pub String);

impl FromStr for ListenAddr {
    type Err = BadListenAddr;

    fn from_str(s: &str) -> Result<ListenAddr, BadListenAddr> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(BadListenAddr(s.to_string()));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>().map(ListenAddr::Tcp).map_err(|_| BadListenAddr(s.to_string()))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Server-wide settings (the `[server]` table).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Addresses to listen on (at least one).
    pub listen: Vec<ListenAddr>,
    /// The encoding announced in the handshake.
    pub encoding: Encoding,
    /// Refuse writable registrations on every storage.
    pub read_only: bool,
    /// Longest a transaction may hold the commit lock; `None`: no limit.
    pub transaction_timeout: Option<Duration>,
    /// Commits remembered for `getInvalidations`.
    pub invalidation_queue_size: usize,
    /// Largest frame accepted from a client, in bytes.
    pub max_frame: u32,
    /// How long a shutdown lets the commit in progress finish.
    pub shutdown_grace: Duration,
    /// Bytes that may wait to be written to one client; a client that lets more pile up (it
    /// does not read its replies) is closed, so that it cannot exhaust the server's memory.
    pub max_output: usize,
    /// The admin endpoint (a unix socket, owner-only): `zeoraid status` and friends.
    pub admin: PathBuf,
}

impl Default for ServerSettings {
    fn default() -> ServerSettings {
        ServerSettings {
            listen: vec![ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 8100)))],
            encoding: Encoding::Pickle,
            read_only: false,
            transaction_timeout: None,
            invalidation_queue_size: 100,
            max_frame: DEFAULT_MAX_FRAME,
            shutdown_grace: Duration::from_secs(10),
            max_output: DEFAULT_MAX_OUTPUT,
            admin: Path::new(DEFAULT_DATA).join(ADMIN_SOCKET),
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from, if any.
    pub file: Option<PathBuf>,
    /// `[server]`.
    pub server: ServerSettings,
    /// `[[storage]]`, in file order (this order numbers the storages in the core).
    pub storages: Vec<StorageSettings>,
}

/// The configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the configuration file: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// A key is missing, unknown or has a bad value; or the TOML is malformed.
    #[error("{file}:{line}:{col}: {key}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// Line, from 1.
        line: usize,
        /// Column, from 1.
        col: usize,
        /// The dotted key (`server.listen`), or `document` for the file as a whole.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A command-line option cannot be applied.
    #[error("{option}: {message}")]
    Option {
        /// The option (`--data`).
        option: &'static str,
        /// What is wrong.
        message: String,
    },
}

// ---- the file as written ------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    server: Option<RawServer>,
    storage: Option<Vec<storage::RawStorage>>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum EncodingName {
    Pickle,
    Msgpack,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<Vec<Spanned<String>>>>,
    encoding: Option<EncodingName>,
    read_only: Option<bool>,
    transaction_timeout: Option<Spanned<f64>>,
    invalidation_queue_size: Option<Spanned<i64>>,
    max_frame: Option<Spanned<i64>>,
    shutdown_grace: Option<Spanned<f64>>,
    max_output: Option<Spanned<i64>>,
    admin: Option<Spanned<String>>,
}

/// Builds errors located in one file's text.
struct Src<'a> {
    file: String,
    text: &'a str,
}

impl Src<'_> {
    fn err(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        let at = locate::line_col(self.text, span.start);
        let key = if key.is_empty() { "document".to_string() } else { key.to_string() };
        ConfigError::Invalid {
            file: self.file.clone(),
            line: at.line,
            col: at.col,
            key,
            message: message.into(),
        }
    }
}

impl Config {
    /// The configuration used without a file: storage `1`, a RAID of two local backends `a`
    /// (`data/a/Data.fs`, blobs in `data/a/blobs`) and `b` (likewise under `data/b`), its state
    /// in `data/1.raid-state`, the admin socket `data/admin.sock`.
    pub fn defaults(data: &Path) -> Config {
        let local = |n: &str| BackendSettings {
            name: n.to_string(),
            kind: BackendKind::Local(LocalSettings {
                path: data.join(n).join("Data.fs"),
                blob_dir: Some(data.join(n).join("blobs")),
                read_only: false,
                fsync: true,
                read_threads: DEFAULT_READ_THREADS,
            }),
        };
        Config {
            file: None,
            server: ServerSettings { admin: data.join(ADMIN_SOCKET), ..ServerSettings::default() },
            storages: vec![StorageSettings {
                name: DEFAULT_STORAGE.to_string(),
                state_file: data.join(format!("{DEFAULT_STORAGE}.raid-state")),
                state_file_given: false,
                call_timeout: DEFAULT_CALL_TIMEOUT,
                write_timeout: DEFAULT_WRITE_TIMEOUT,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                recovery_rate: zeoraid_core::raid::RateLimit::UNLIMITED,
                switch_max_lag: DEFAULT_SWITCH_MAX_LAG,
                switch_timeout: DEFAULT_SWITCH_TIMEOUT,
                backends: vec![local("a"), local("b")],
            }],
        }
    }

    /// Reads and validates a configuration file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file)
            .map_err(|source| ConfigError::Read { file: file.display().to_string(), source })?;
        Config::parse(&text, file)
    }

    /// Validates `text` as the content of `file` (relative paths are resolved against the
    /// directory of `file`; the file system is checked as the module doc says).
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let src = Src { file: file.display().to_string(), text };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let key = locate::key_at(text, span.start);
            src.err(span, &key, e.message().trim_end())
        })?;
        let base = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let server = match raw.server {
            Some(s) => validate_server(&src, &base, s)?,
            None => ServerSettings { admin: base.join(ADMIN_SOCKET), ..ServerSettings::default() },
        };
        let raws = raw.storage.unwrap_or_default();
        if raws.is_empty() {
            return Err(src.err(0..0, "storage", "at least one [[storage]] table is required"));
        }
        let mut storages: Vec<StorageSettings> = Vec::with_capacity(raws.len());
        let mut lines: Vec<usize> = Vec::with_capacity(raws.len());
        let mut spans = Vec::with_capacity(raws.len());
        for r in raws {
            let name_span = storage::name_span(&r);
            let line = locate::line_col(text, name_span.start).line;
            spans.push(storage::path_spans(&r));
            let s = storage::validate_storage(&src, &base, server.read_only, r)?;
            if let Some(i) = storages.iter().position(|o| o.name == s.name) {
                return Err(src.err(
                    name_span,
                    "storage.name",
                    format!("storage name {:?} is already used at line {}", s.name, lines[i]),
                ));
            }
            if let Some(o) = storages.iter().find(|o| o.state_file == s.state_file) {
                return Err(src.err(
                    name_span,
                    "storage.state_file",
                    format!("{} is already the state file of storage {:?}", s.state_file.display(), o.name),
                ));
            }
            storages.push(s);
            lines.push(line);
        }
        storage::check_unique_paths(&src, &storages, text, &spans)?;
        Ok(Config { file: Some(file.to_path_buf()), server, storages })
    }

    /// `--listen`: replaces the listen list (a no-op when `addrs` is empty).
    pub fn override_listen(&mut self, addrs: Vec<ListenAddr>) -> Result<(), ConfigError> {
        if addrs.is_empty() {
            return Ok(());
        }
        if let Some(dup) = first_duplicate(&addrs) {
            return Err(ConfigError::Option { option: "--listen", message: format!("{dup} is given twice") });
        }
        self.server.listen = addrs;
        Ok(())
    }

    /// `--data DIR` without a file: `dir` must be (or be creatable as) a directory.
    pub fn check_data_dir(dir: &Path) -> Result<(), ConfigError> {
        check_creatable(dir).map_err(|m| ConfigError::Option { option: "--data", message: m })
    }

    /// `--data DIR`: see the module doc.
    pub fn override_data(&mut self, dir: &Path) -> Result<(), ConfigError> {
        let [only] = self.storages.as_mut_slice() else {
            return Err(ConfigError::Option {
                option: "--data",
                message: format!(
                    "the configuration has {} storages; --data can only relocate a single storage \
                     (set each storage's path in the file instead)",
                    self.storages.len()
                ),
            });
        };
        let [BackendSettings { kind: BackendKind::Local(local), .. }] = only.backends.as_mut_slice() else {
            return Err(ConfigError::Option {
                option: "--data",
                message: format!(
                    "storage {:?} has {} backends; --data can only relocate a single local storage \
                     (set each backend's path in the file instead)",
                    only.name,
                    only.backends.len()
                ),
            });
        };
        check_creatable(dir).map_err(|m| ConfigError::Option { option: "--data", message: m })?;
        local.path = dir.join("Data.fs");
        if local.blob_dir.is_some() {
            local.blob_dir = Some(dir.join("blobs"));
        }
        if local.read_only && !local.path.exists() {
            return Err(ConfigError::Option {
                option: "--data",
                message: format!("{} does not exist (the storage is read-only)", local.path.display()),
            });
        }
        if !only.state_file_given {
            only.state_file = StorageSettings::default_state_file(&only.name, &only.backends, dir);
        }
        Ok(())
    }

    /// Creates the missing directories that writable local backends (and their blobs), the
    /// state files and the admin socket live in.
    pub fn create_dirs(&self) -> std::io::Result<()> {
        let parent = |p: &Path| p.parent().filter(|p| !p.as_os_str().is_empty()).map(Path::to_path_buf);
        let mut dirs: Vec<PathBuf> = Vec::new();
        dirs.extend(parent(&self.server.admin));
        for s in &self.storages {
            dirs.extend(parent(&s.state_file));
            for l in s.backends.iter().filter_map(BackendSettings::local).filter(|l| !l.read_only) {
                dirs.extend(parent(&l.path));
                dirs.extend(l.blob_dir.clone());
            }
        }
        for d in dirs {
            std::fs::create_dir_all(d)?;
        }
        Ok(())
    }

    /// The core's configuration, with one seed per storage in [`Config::storages`] order.
    pub fn server_config(&self, storages: Vec<StorageSeed>) -> ServerConfig {
        ServerConfig {
            announce: self.server.encoding,
            max_frame: self.server.max_frame,
            read_only: self.server.read_only,
            transaction_timeout: self.server.transaction_timeout,
            invalidation_queue_size: self.server.invalidation_queue_size,
            storages,
        }
    }

    /// A few lines describing the configuration (for `check-config`).
    pub fn summary(&self) -> String {
        let s = &self.server;
        let mut out = String::new();
        let listen: Vec<String> = s.listen.iter().map(ToString::to_string).collect();
        out.push_str(&format!("listen: {}\n", listen.join(", ")));
        let timeout = s.transaction_timeout.map_or("none".to_string(), |t| format!("{}s", t.as_secs_f64()));
        out.push_str(&format!(
            "encoding: {}, read_only: {}, transaction_timeout: {timeout}, invalidation_queue_size: {}, \
             max_frame: {}, shutdown_grace: {}s\n",
            match s.encoding {
                Encoding::Pickle => "pickle",
                Encoding::Msgpack => "msgpack",
            },
            s.read_only,
            s.invalidation_queue_size,
            s.max_frame,
            s.shutdown_grace.as_secs_f64()
        ));
        out.push_str(&format!("admin: unix:{}\n", s.admin.display()));
        for st in &self.storages {
            out.push_str(&format!(
                "storage {:?}: {} backend(s), state in {}, call_timeout: {}s, write_timeout: {}s, \
                 connect_timeout: {}s\n  recovery rate: {}, switch_max_lag: {}, switch_timeout: {}s\n",
                st.name,
                st.backends.len(),
                st.state_file.display(),
                st.call_timeout.as_secs_f64(),
                st.write_timeout.as_secs_f64(),
                st.connect_timeout.as_secs_f64(),
                st.recovery_rate,
                st.switch_max_lag,
                st.switch_timeout.as_secs_f64()
            ));
            for b in &st.backends {
                let more = match &b.kind {
                    BackendKind::Local(l) => format!(
                        "{}{}, fsync: {}, read_threads: {}",
                        l.blob_dir.as_ref().map_or(String::new(), |b| format!(", blobs in {}", b.display())),
                        if l.read_only { ", read-only" } else { "" },
                        l.fsync,
                        l.read_threads
                    ),
                    BackendKind::Zeo(z) => (if z.read_only { ", read-only" } else { "" }).to_string(),
                };
                out.push_str(&format!("  backend {:?}: {}{more}\n", b.name, b.label()));
            }
        }
        out
    }
}

fn validate_server(src: &Src<'_>, base: &Path, r: RawServer) -> Result<ServerSettings, ConfigError> {
    let mut s = ServerSettings { admin: base.join(ADMIN_SOCKET), ..ServerSettings::default() };
    if let Some(a) = &r.admin {
        s.admin = resolve(src, base, a, "server.admin")?;
        if s.admin.is_dir() {
            return Err(src.err(a.span(), "server.admin", format!("{} is a directory", s.admin.display())));
        }
    }
    if let Some(listen) = r.listen {
        if listen.get_ref().is_empty() {
            return Err(src.err(listen.span(), "server.listen", "at least one address is required"));
        }
        let mut addrs: Vec<ListenAddr> = Vec::new();
        for a in listen.get_ref() {
            let addr: ListenAddr = a
                .get_ref()
                .parse()
                .map_err(|e: BadListenAddr| src.err(a.span(), "server.listen", e.to_string()))?;
            if addrs.contains(&addr) {
                return Err(src.err(a.span(), "server.listen", format!("{addr} is listed twice")));
            }
            addrs.push(addr);
        }
        s.listen = addrs;
    }
    if let Some(e) = r.encoding {
        s.encoding = match e {
            EncodingName::Pickle => Encoding::Pickle,
            EncodingName::Msgpack => Encoding::Msgpack,
        };
    }
    s.read_only = r.read_only.unwrap_or(false);
    if let Some(t) = r.transaction_timeout {
        s.transaction_timeout = Some(seconds(src, &t, "server.transaction_timeout", false)?);
    }
    if let Some(n) = r.invalidation_queue_size {
        let v = *n.get_ref();
        if !(1..=1_000_000).contains(&v) {
            return Err(src.err(
                n.span(),
                "server.invalidation_queue_size",
                format!("{v} is not between 1 and 1000000"),
            ));
        }
        s.invalidation_queue_size = usize::try_from(v).unwrap_or(100);
    }
    if let Some(n) = r.max_frame {
        let v = *n.get_ref();
        s.max_frame = u32::try_from(v).ok().filter(|v| *v >= MIN_MAX_FRAME).ok_or_else(|| {
            src.err(
                n.span(),
                "server.max_frame",
                format!("{v} is not between {MIN_MAX_FRAME} and {}", u32::MAX),
            )
        })?;
    }
    if let Some(t) = r.shutdown_grace {
        s.shutdown_grace = seconds(src, &t, "server.shutdown_grace", true)?;
    }
    if let Some(n) = r.max_output {
        let v = *n.get_ref();
        s.max_output = usize::try_from(v).ok().filter(|v| *v >= MIN_MAX_OUTPUT).ok_or_else(|| {
            src.err(n.span(), "server.max_output", format!("{v} is below {MIN_MAX_OUTPUT} bytes"))
        })?;
    }
    Ok(s)
}

/// A number of seconds: finite, positive (or zero when `zero_ok`), at most a year.
fn seconds(src: &Src<'_>, t: &Spanned<f64>, key: &str, zero_ok: bool) -> Result<Duration, ConfigError> {
    let v = *t.get_ref();
    let ok = v.is_finite() && v <= 365.0 * 86400.0 && (v > 0.0 || (zero_ok && v == 0.0));
    if !ok {
        let want = if zero_ok { "zero or more" } else { "more than zero" };
        return Err(src.err(
            t.span(),
            key,
            format!("{v} is not a number of seconds ({want}, at most a year)"),
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

/// A path of the file, resolved against `base` when relative.
fn resolve(src: &Src<'_>, base: &Path, p: &Spanned<String>, key: &str) -> Result<PathBuf, ConfigError> {
    let s = p.get_ref();
    if s.is_empty() {
        return Err(src.err(p.span(), key, "the path must not be empty"));
    }
    let path = Path::new(s);
    Ok(if path.is_absolute() { path.to_path_buf() } else { base.join(path) })
}

/// `dir` exists as a directory, or its nearest existing ancestor is a directory (so that it
/// can be created). The message says what is in the way.
fn check_creatable(dir: &Path) -> Result<(), String> {
    let mut p = dir;
    loop {
        if p.as_os_str().is_empty() {
            return Ok(()); // the working directory
        }
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) if p == dir => return Err(format!("{} exists and is not a directory", p.display())),
            Ok(_) => {
                return Err(format!(
                    "directory {} cannot be created: {} is not a directory",
                    dir.display(),
                    p.display()
                ))
            }
            Err(e)
                if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) =>
            {
                match p.parent() {
                    Some(parent) => p = parent,
                    None => return Ok(()),
                }
            }
            Err(e) => return Err(format!("{}: {e}", p.display())),
        }
    }
}

fn first_duplicate(addrs: &[ListenAddr]) -> Option<&ListenAddr> {
    addrs.iter().enumerate().find(|(i, a)| addrs[..*i].contains(a)).map(|(_, a)| a)
}
