//! `[[storage]]` tables: a storage is a RAID of backends, each a local FileStorage or a
//! remote ZEO server (see the module doc of [`crate::config`] for the file format).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use zeoraid_core::raid::{BackendSpec, RaidConfig, RateLimit};

use super::{check_creatable, locate, rate, resolve, seconds, ConfigError, Src};
use crate::backend::local::LocalConfig;
use crate::backend::remote::RemoteAddr;

/// The backend name of the old single-storage form (`path` directly under `[[storage]]`).
pub const SINGLE_BACKEND: &str = "local";
/// Default `call_timeout`.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `write_timeout`.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `switch_max_lag` (transactions), as the RAID's own default.
pub const DEFAULT_SWITCH_MAX_LAG: u64 = 20;
/// Default `switch_timeout`, as the RAID's own default.
pub const DEFAULT_SWITCH_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest `switch_max_lag` accepted.
const MAX_SWITCH_MAX_LAG: u64 = 1_000_000;
/// The storage a remote backend registers when the config does not say.
pub const DEFAULT_REMOTE_STORAGE: &str = "1";

/// One served storage (a `[[storage]]` table): a RAID of backends.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageSettings {
    /// The name clients give to `register`.
    pub name: String,
    /// Where the RAID keeps its state.
    pub state_file: PathBuf,
    /// Whether `state_file` was given (else it follows `--data`).
    pub state_file_given: bool,
    /// How long a backend may take for one read.
    pub call_timeout: Duration,
    /// How long a backend may take for a vote, finish or abort.
    pub write_timeout: Duration,
    /// How long a remote backend may take to connect and register.
    pub connect_timeout: Duration,
    /// The recovery's default rate limit (`recovery_rate_bytes`, `recovery_rate_txns`).
    pub recovery_rate: RateLimit,
    /// The recovery's switch starts when the target is at most this many transactions behind.
    pub switch_max_lag: u64,
    /// The longest the recovery's switch may hold the commit lock.
    pub switch_timeout: Duration,
    /// The backends, in file order (this order numbers them in the RAID).
    pub backends: Vec<BackendSettings>,
}

/// One backend of a storage.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSettings {
    /// Unique within the storage.
    pub name: String,
    /// Local or remote.
    pub kind: BackendKind,
}

/// What a backend is.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendKind {
    /// A local FileStorage.
    Local(LocalSettings),
    /// A remote ZEO server.
    Zeo(ZeoSettings),
}

/// A local FileStorage backend.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalSettings {
    /// `Data.fs` (resolved against the config file's directory).
    pub path: PathBuf,
    /// The blob directory, if blobs are kept.
    pub blob_dir: Option<PathBuf>,
    /// Refuse writes.
    pub read_only: bool,
    /// fsync at every commit.
    pub fsync: bool,
    /// Threads serving reads.
    pub read_threads: usize,
}

/// A remote ZEO server backend.
#[derive(Debug, Clone, PartialEq)]
pub struct ZeoSettings {
    /// Where it listens (`HOST:PORT`, or `unix:PATH`).
    pub address: RemoteAddr,
    /// The storage name to register.
    pub storage: String,
    /// Register read-only.
    pub read_only: bool,
}

impl LocalSettings {
    /// The local backend's configuration. A relative `blob_dir` is made absolute (against the
    /// working directory, as `path` is read), because the storage engine would read a relative
    /// one against the directory of `Data.fs`.
    pub fn local_config(&self) -> LocalConfig {
        let blob_dir = self.blob_dir.as_ref().map(|b| match std::env::current_dir() {
            Ok(cwd) if b.is_relative() => cwd.join(b),
            _ => b.clone(),
        });
        LocalConfig {
            path: self.path.clone(),
            blob_dir,
            read_only: self.read_only,
            fsync: self.fsync,
            read_threads: self.read_threads,
        }
    }
}

impl BackendSettings {
    /// What it is, for logs and `details`: `local var/a/Data.fs`, `zeo 127.0.0.1:8101 storage 1`.
    pub fn label(&self) -> String {
        match &self.kind {
            BackendKind::Local(l) => format!("local {}", l.path.display()),
            BackendKind::Zeo(z) => format!("zeo {} storage {}", z.address, z.storage),
        }
    }

    /// The local settings, if it is local.
    pub fn local(&self) -> Option<&LocalSettings> {
        match &self.kind {
            BackendKind::Local(l) => Some(l),
            BackendKind::Zeo(_) => None,
        }
    }
}

impl StorageSettings {
    /// The RAID's settings.
    pub fn raid_config(&self) -> RaidConfig {
        RaidConfig {
            call_timeout: self.call_timeout,
            write_timeout: self.write_timeout,
            recovery_rate: self.recovery_rate,
            switch_max_lag: self.switch_max_lag,
            switch_timeout: self.switch_timeout,
            ..RaidConfig::new(&self.name)
        }
    }

    /// The RAID's backend specs, in backend order.
    pub fn specs(&self) -> Vec<BackendSpec> {
        self.backends.iter().map(|b| BackendSpec { name: b.name.clone(), label: b.label() }).collect()
    }

    /// The first local backend, if any.
    pub fn first_local(&self) -> Option<&LocalSettings> {
        self.backends.iter().find_map(BackendSettings::local)
    }

    /// The default state file: `<name>.raid-state` next to the first local backend's
    /// `Data.fs`, else in `fallback` (the config file's directory).
    pub(crate) fn default_state_file(name: &str, backends: &[BackendSettings], fallback: &Path) -> PathBuf {
        let file = format!("{}.raid-state", name.replace(['/', '\\'], "_"));
        let dir = backends
            .iter()
            .find_map(BackendSettings::local)
            .and_then(|l| l.path.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| fallback.to_path_buf());
        dir.join(file)
    }
}

// ---- the file as written ------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    name: Spanned<String>,
    path: Option<Spanned<String>>,
    blob_dir: Option<Spanned<String>>,
    read_only: Option<Spanned<bool>>,
    fsync: Option<Spanned<bool>>,
    read_threads: Option<Spanned<i64>>,
    state_file: Option<Spanned<String>>,
    call_timeout: Option<Spanned<f64>>,
    write_timeout: Option<Spanned<f64>>,
    connect_timeout: Option<Spanned<f64>>,
    recovery_rate_bytes: Option<Spanned<IntOrText>>,
    recovery_rate_txns: Option<Spanned<i64>>,
    switch_max_lag: Option<Spanned<i64>>,
    switch_timeout: Option<Spanned<f64>>,
    backend: Option<Vec<RawBackend>>,
}

/// A value written either as an integer or as a string (`20000000` or `"20MB"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum IntOrText {
    Int(i64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    name: Spanned<String>,
    path: Option<Spanned<String>>,
    blob_dir: Option<Spanned<String>>,
    read_only: Option<Spanned<bool>>,
    fsync: Option<Spanned<bool>>,
    read_threads: Option<Spanned<i64>>,
    zeo: Option<Spanned<String>>,
    storage: Option<Spanned<String>>,
}

/// The local keys of one table, as written (the storage table in the old form, or a backend).
struct RawLocal<'a> {
    path: &'a Spanned<String>,
    blob_dir: Option<&'a Spanned<String>>,
    read_only: Option<&'a Spanned<bool>>,
    fsync: Option<&'a Spanned<bool>>,
    read_threads: Option<&'a Spanned<i64>>,
}

/// A name: not empty, no control characters.
fn check_name(src: &Src<'_>, n: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
    let name = n.get_ref();
    if name.is_empty() {
        return Err(src.err(n.span(), key, "the name must not be empty"));
    }
    if name.chars().any(char::is_control) {
        return Err(src.err(n.span(), key, format!("{name:?} contains control characters")));
    }
    Ok(name.clone())
}

/// Refuses the first of `keys` that is set (each `(key, its span)` when present) as
/// `<table>.<key>`, with `message`: a key this kind of table does not take.
fn refuse_stray_keys(
    src: &Src<'_>,
    table: &str,
    keys: impl IntoIterator<Item = Option<(&'static str, std::ops::Range<usize>)>>,
    message: &str,
) -> Result<(), ConfigError> {
    match keys.into_iter().flatten().next() {
        Some((key, span)) => Err(src.err(span, &format!("{table}.{key}"), message)),
        None => Ok(()),
    }
}

pub(super) fn validate_storage(
    src: &Src<'_>,
    base: &Path,
    all_read_only: bool,
    r: RawStorage,
) -> Result<StorageSettings, ConfigError> {
    let name = check_name(src, &r.name, "storage.name")?;
    let backends = match (r.backend, &r.path) {
        (Some(raws), _) => {
            // The new form: the local keys belong in the backends.
            refuse_stray_keys(
                src,
                "storage",
                [
                    r.path.as_ref().map(|p| ("path", p.span())),
                    r.blob_dir.as_ref().map(|p| ("blob_dir", p.span())),
                    r.read_only.as_ref().map(|p| ("read_only", p.span())),
                    r.fsync.as_ref().map(|p| ("fsync", p.span())),
                    r.read_threads.as_ref().map(|p| ("read_threads", p.span())),
                ],
                "a storage with [[storage.backend]] tables takes this key in each backend",
            )?;
            if raws.is_empty() {
                return Err(src.err(r.name.span(), "storage.backend", "at least one backend is required"));
            }
            let mut out: Vec<BackendSettings> = Vec::with_capacity(raws.len());
            for b in raws {
                let bname = check_name(src, &b.name, "storage.backend.name")?;
                if out.iter().any(|o| o.name == bname) {
                    return Err(src.err(
                        b.name.span(),
                        "storage.backend.name",
                        format!("backend name {bname:?} is already used in storage {name:?}"),
                    ));
                }
                let kind = validate_backend(src, base, all_read_only, &b)?;
                out.push(BackendSettings { name: bname, kind });
            }
            out
        }
        (None, Some(path)) => {
            let raw = RawLocal {
                path,
                blob_dir: r.blob_dir.as_ref(),
                read_only: r.read_only.as_ref(),
                fsync: r.fsync.as_ref(),
                read_threads: r.read_threads.as_ref(),
            };
            let local = validate_local(src, base, all_read_only, &raw, "storage")?;
            vec![BackendSettings { name: SINGLE_BACKEND.to_string(), kind: BackendKind::Local(local) }]
        }
        (None, None) => {
            return Err(src.err(
                r.name.span(),
                "storage",
                "missing field `path` (a single local storage) or [[storage.backend]] tables (a RAID)",
            ))
        }
    };
    let (state_file, state_file_given) = match &r.state_file {
        Some(p) => (resolve(src, base, p, "storage.state_file")?, true),
        None => (StorageSettings::default_state_file(&name, &backends, base), false),
    };
    if state_file.is_dir() {
        let span = r.state_file.as_ref().map_or(r.name.span(), Spanned::span);
        return Err(src.err(span, "storage.state_file", format!("{} is a directory", state_file.display())));
    }
    let timeout = |t: &Option<Spanned<f64>>, key: &str, default: Duration| match t {
        Some(t) => seconds(src, t, key, false),
        None => Ok(default),
    };
    Ok(StorageSettings {
        name,
        state_file,
        state_file_given,
        call_timeout: timeout(&r.call_timeout, "storage.call_timeout", DEFAULT_CALL_TIMEOUT)?,
        write_timeout: timeout(&r.write_timeout, "storage.write_timeout", DEFAULT_WRITE_TIMEOUT)?,
        connect_timeout: timeout(&r.connect_timeout, "storage.connect_timeout", DEFAULT_CONNECT_TIMEOUT)?,
        recovery_rate: RateLimit {
            bytes_per_sec: r.recovery_rate_bytes.as_ref().map(|v| rate_bytes(src, v)).transpose()?,
            txns_per_sec: r
                .recovery_rate_txns
                .as_ref()
                .map(|v| bounded(src, v, "storage.recovery_rate_txns", 1, 1 << 40, "transactions/s"))
                .transpose()?,
        },
        switch_max_lag: r
            .switch_max_lag
            .as_ref()
            .map(|v| bounded(src, v, "storage.switch_max_lag", 0, MAX_SWITCH_MAX_LAG, "transactions"))
            .transpose()?
            .unwrap_or(DEFAULT_SWITCH_MAX_LAG),
        switch_timeout: timeout(&r.switch_timeout, "storage.switch_timeout", DEFAULT_SWITCH_TIMEOUT)?,
        backends,
    })
}

/// `recovery_rate_bytes`: an integer or a string with a unit (see [`rate::parse_bytes`]).
fn rate_bytes(src: &Src<'_>, v: &Spanned<IntOrText>) -> Result<u64, ConfigError> {
    const KEY: &str = "storage.recovery_rate_bytes";
    match v.get_ref() {
        IntOrText::Int(n) => u64::try_from(*n).ok().filter(|n| *n >= 1).ok_or_else(|| {
            src.err(
                v.span(),
                KEY,
                format!("{n} is not a rate of at least 1 byte/s (leave the key out for no limit)"),
            )
        }),
        IntOrText::Text(t) => rate::parse_bytes(t).map_err(|m| src.err(v.span(), KEY, m)),
    }
}

/// An integer between `min` and `max` (`unit` for the message).
fn bounded(
    src: &Src<'_>,
    v: &Spanned<i64>,
    key: &str,
    min: u64,
    max: u64,
    unit: &str,
) -> Result<u64, ConfigError> {
    let n = *v.get_ref();
    u64::try_from(n)
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| src.err(v.span(), key, format!("{n} is not between {min} and {max} {unit}")))
}

fn validate_backend(
    src: &Src<'_>,
    base: &Path,
    all_read_only: bool,
    b: &RawBackend,
) -> Result<BackendKind, ConfigError> {
    const T: &str = "storage.backend";
    match (&b.path, &b.zeo) {
        (Some(path), None) => {
            if let Some(s) = &b.storage {
                return Err(src.err(
                    s.span(),
                    "storage.backend.storage",
                    "only a `zeo` backend takes `storage`",
                ));
            }
            let raw = RawLocal {
                path,
                blob_dir: b.blob_dir.as_ref(),
                read_only: b.read_only.as_ref(),
                fsync: b.fsync.as_ref(),
                read_threads: b.read_threads.as_ref(),
            };
            Ok(BackendKind::Local(validate_local(src, base, all_read_only, &raw, T)?))
        }
        (None, Some(zeo)) => {
            refuse_stray_keys(
                src,
                T,
                [
                    b.blob_dir.as_ref().map(|p| ("blob_dir", p.span())),
                    b.fsync.as_ref().map(|p| ("fsync", p.span())),
                    b.read_threads.as_ref().map(|p| ("read_threads", p.span())),
                ],
                "only a local backend (`path`) takes this key; a `zeo` backend's server has its own",
            )?;
            let address: RemoteAddr =
                zeo.get_ref().parse().map_err(|e: crate::backend::remote::BadRemoteAddr| {
                    src.err(zeo.span(), "storage.backend.zeo", e.to_string())
                })?;
            let address = match address {
                RemoteAddr::Unix(p) if p.is_relative() => RemoteAddr::Unix(base.join(p)),
                a => a,
            };
            let storage = match &b.storage {
                Some(s) => check_name(src, s, "storage.backend.storage")?,
                None => DEFAULT_REMOTE_STORAGE.to_string(),
            };
            let read_only = b.read_only.as_ref().is_some_and(|r| *r.get_ref()) || all_read_only;
            Ok(BackendKind::Zeo(ZeoSettings { address, storage, read_only }))
        }
        (Some(_), Some(zeo)) => Err(src.err(
            zeo.span(),
            "storage.backend.zeo",
            "a backend is either local (`path`) or remote (`zeo`), not both",
        )),
        (None, None) => Err(src.err(
            b.name.span(),
            T,
            "a backend needs `path` (a local FileStorage) or `zeo` (a remote ZEO server)",
        )),
    }
}

fn validate_local(
    src: &Src<'_>,
    base: &Path,
    all_read_only: bool,
    r: &RawLocal<'_>,
    table: &str,
) -> Result<LocalSettings, ConfigError> {
    let key = |k: &str| format!("{table}.{k}");
    let read_only = r.read_only.is_some_and(|r| *r.get_ref()) || all_read_only;
    let path = resolve(src, base, r.path, &key("path"))?;
    if path.is_dir() {
        return Err(src.err(
            r.path.span(),
            &key("path"),
            format!("{} is a directory, not a Data.fs file", path.display()),
        ));
    }
    if read_only {
        if !path.is_file() {
            return Err(src.err(
                r.path.span(),
                &key("path"),
                format!("{} does not exist (the storage is read-only)", path.display()),
            ));
        }
    } else if let Some(parent) = path.parent() {
        check_creatable(parent).map_err(|m| src.err(r.path.span(), &key("path"), m))?;
    }
    let blob_dir = match r.blob_dir {
        Some(b) => {
            let dir = resolve(src, base, b, &key("blob_dir"))?;
            if read_only && !dir.is_dir() {
                return Err(src.err(
                    b.span(),
                    &key("blob_dir"),
                    format!("{} is not a directory (the storage is read-only)", dir.display()),
                ));
            }
            check_creatable(&dir).map_err(|m| src.err(b.span(), &key("blob_dir"), m))?;
            Some(dir)
        }
        None => None,
    };
    let read_threads = match r.read_threads {
        Some(n) => {
            let v = *n.get_ref();
            usize::try_from(v).ok().filter(|v| (1..=super::MAX_READ_THREADS).contains(v)).ok_or_else(
                || {
                    src.err(
                        n.span(),
                        &key("read_threads"),
                        format!("{v} is not between 1 and {}", super::MAX_READ_THREADS),
                    )
                },
            )?
        }
        None => super::DEFAULT_READ_THREADS,
    };
    Ok(LocalSettings { path, blob_dir, read_only, fsync: r.fsync.is_none_or(|f| *f.get_ref()), read_threads })
}

/// Checks across storages: every local `Data.fs` is used once. `lines` gives each storage's
/// line, for the message.
pub(super) fn check_unique_paths(
    src: &Src<'_>,
    storages: &[StorageSettings],
    text: &str,
    spans: &[Vec<std::ops::Range<usize>>],
) -> Result<(), ConfigError> {
    let mut seen: Vec<(&Path, &str, &str, usize)> = Vec::new();
    for (s, spans) in storages.iter().zip(spans) {
        for (b, span) in s.backends.iter().zip(spans) {
            let Some(l) = b.local() else { continue };
            if let Some((_, st, bn, line)) = seen.iter().find(|(p, ..)| *p == l.path.as_path()) {
                let key = if b.name == SINGLE_BACKEND { "storage.path" } else { "storage.backend.path" };
                return Err(src.err(
                    span.clone(),
                    key,
                    format!(
                        "{} is already served as storage {st:?} backend {bn:?} (line {line})",
                        l.path.display()
                    ),
                ));
            }
            seen.push((&l.path, &s.name, &b.name, locate::line_col(text, span.start).line));
        }
    }
    Ok(())
}

/// The spans of each backend's `path` (or name) in a raw storage, in backend order, for
/// [`check_unique_paths`].
pub(super) fn path_spans(r: &RawStorage) -> Vec<std::ops::Range<usize>> {
    match (&r.backend, &r.path) {
        (Some(bs), _) => bs.iter().map(|b| b.path.as_ref().map_or(b.name.span(), Spanned::span)).collect(),
        (None, Some(p)) => vec![p.span()],
        (None, None) => Vec::new(),
    }
}

/// The span of a raw storage's name.
pub(super) fn name_span(r: &RawStorage) -> std::ops::Range<usize> {
    r.name.span()
}
