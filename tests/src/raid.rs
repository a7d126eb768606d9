//! RAIDs under test: `zeoraid serve` in front of several backends, each a stock `runzeo`
//! process (FileStorage + blob directory, `client-conflict-resolution true`) or a local storage
//! of zeoraid's own, and the checks made on them afterwards.
//!
//! A RAID is a [`ServerProcess`] of kind [`ServerKind::Raid`]: its directory holds the generated
//! `zeoraid.toml`, the admin socket `admin.sock`, the state file `1.raid-state`, and one
//! subdirectory per backend (`a/`, `b/`, ...) with its `Data.fs` and `blobs/` (and, for a
//! `runzeo` backend, that server's own config and logs). The backends start before the front
//! and keep running when the front is stopped or restarted ([`ServerProcess::restart`] restarts
//! only the front); [`ServerProcess::stop_all`] stops the front, then the backends.
//!
//! Encodings: the front announces the encoding of its [`ServerOpts`]; the `runzeo` backends
//! alternate (the first backend uses the front's encoding, the second the other one, ...), so
//! the RAID's client side answers both letters in every run.
//!
//! [`ServerProcess::check_mirrors`] is the check made after every interop scenario: every
//! backend holds an identical history (tests/python/compare_backends.py, ZODB's own FileStorage
//! reading each `Data.fs`), containing every transaction the front reports.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use zeoraid_core::wire::Encoding;

use crate::python::{scripts_dir, PythonEnv};
use crate::server::{run_with_deadline, toml_string, ServerError, ServerKind, ServerOpts, ServerProcess};

/// How long one run of compare_backends.py or of an admin command may take.
const CHECK_DEADLINE: Duration = Duration::from_secs(120);

/// The names of the backends, in order.
const BACKEND_NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

/// What one backend of a RAID is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// A local storage of zeoraid's own (`path` + `blob_dir` in the config).
    Local,
    /// A stock ZEO 6.2 `runzeo` process, reached over TCP (`zeo` + `storage` in the config).
    Runzeo,
    /// A ZEO backend at a loopback port where nothing listens (a server that is down); it has
    /// no storage to compare.
    Unreachable,
}

/// The shape of a RAID under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaidSpec {
    /// Its name in messages and directory names (`raid-local`, `raid-zeo`, `raid-mixed`).
    pub label: &'static str,
    /// The backends, named `a`, `b`, ... in this order (at most six).
    pub backends: Vec<BackendKind>,
    /// `call_timeout`: a read call slower than this degrades the backend.
    pub call_timeout: Duration,
    /// `write_timeout`: a vote, finish or abort slower than this degrades the backend.
    pub write_timeout: Duration,
    /// `connect_timeout`: a connect slower than this degrades the backend.
    pub connect_timeout: Duration,
}

impl RaidSpec {
    /// Two local storages.
    pub fn local() -> RaidSpec {
        RaidSpec::new("raid-local", vec![BackendKind::Local, BackendKind::Local])
    }

    /// Two stock `runzeo` servers.
    pub fn zeo() -> RaidSpec {
        RaidSpec::new("raid-zeo", vec![BackendKind::Runzeo, BackendKind::Runzeo])
    }

    /// A local storage (`a`) and a stock `runzeo` server (`b`).
    pub fn mixed() -> RaidSpec {
        RaidSpec::new("raid-mixed", vec![BackendKind::Local, BackendKind::Runzeo])
    }

    /// `raid-local`, `raid-zeo` or `raid-mixed`.
    pub fn from_name(name: &str) -> Option<RaidSpec> {
        match name {
            "raid-local" => Some(RaidSpec::local()),
            "raid-zeo" => Some(RaidSpec::zeo()),
            "raid-mixed" => Some(RaidSpec::mixed()),
            _ => None,
        }
    }

    /// The generous deadlines of the interop tests (10 s per read, 30 s per vote/finish/abort,
    /// 5 s per connect: a loaded CI machine must not degrade a healthy backend).
    fn new(label: &'static str, backends: Vec<BackendKind>) -> RaidSpec {
        RaidSpec {
            label,
            backends,
            call_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// The same RAID with other deadlines (the fault tests use short ones).
    pub fn with_timeouts(mut self, call: Duration, write: Duration, connect: Duration) -> RaidSpec {
        self.call_timeout = call;
        self.write_timeout = write;
        self.connect_timeout = connect;
        self
    }

    /// The kind that runs this RAID with the zeoraid binary of this test process.
    pub fn kind(self) -> ServerKind {
        ServerKind::Raid { binary: crate::server::zeoraid_binary().to_path_buf(), spec: self }
    }
}

/// One backend of a running RAID.
#[derive(Debug)]
pub struct RaidBackend {
    /// Its name in the config and in `zeoraid details`.
    pub name: String,
    /// What it is.
    pub kind: BackendKind,
    /// Its FileStorage.
    pub data: PathBuf,
    /// Its blob directory.
    pub blobs: PathBuf,
    /// The `runzeo` process of a [`BackendKind::Runzeo`] backend.
    pub server: Option<ServerProcess>,
    /// The address of a [`BackendKind::Unreachable`] backend.
    pub unreachable: Option<SocketAddr>,
}

/// Starts the `runzeo` backends of `spec` in subdirectories of `dir`; local backends only get
/// their paths.
pub(crate) fn start_backends(
    spec: &RaidSpec,
    opts: &ServerOpts,
    dir: &Path,
) -> Result<Vec<RaidBackend>, ServerError> {
    let mut backends = Vec::new();
    for (i, &kind) in spec.backends.iter().enumerate() {
        backends.push(start_backend(i, kind, opts, dir)?);
    }
    Ok(backends)
}

/// Starts backend number `i` (named `a`, `b`, ... by `i`) of kind `kind` in a subdirectory of
/// `dir`.
fn start_backend(
    i: usize,
    kind: BackendKind,
    opts: &ServerOpts,
    dir: &Path,
) -> Result<RaidBackend, ServerError> {
    let Some(&name) = BACKEND_NAMES.get(i) else {
        return Err(ServerError::Check {
            what: format!("a RAID of {} backends", i + 1),
            details: format!("the harness names at most {}", BACKEND_NAMES.len()),
        });
    };
    let sub = dir.join(name);
    let (mut server, mut unreachable) = (None, None);
    match kind {
        BackendKind::Local => {}
        BackendKind::Runzeo => {
            let encoding = if i % 2 == 0 { opts.encoding } else { other(opts.encoding) };
            server = Some(ServerProcess::start_in(
                ServerKind::Runzeo,
                ServerOpts { pack_gc: false, ..ServerOpts::new(encoding) },
                sub.clone(),
            )?);
        }
        BackendKind::Unreachable => unreachable = Some(crate::ports::free_port()?),
    }
    Ok(RaidBackend {
        name: name.to_string(),
        kind,
        data: sub.join("Data.fs"),
        blobs: sub.join("blobs"),
        server,
        unreachable,
    })
}

/// `n` local backends in subdirectories of `dir` (the shape of the default `zeoraid serve`).
pub(crate) fn local_backends(dir: &Path, n: usize) -> Vec<RaidBackend> {
    BACKEND_NAMES
        .iter()
        .take(n)
        .map(|name| RaidBackend {
            name: name.to_string(),
            kind: BackendKind::Local,
            data: dir.join(name).join("Data.fs"),
            blobs: dir.join(name).join("blobs"),
            server: None,
            unreachable: None,
        })
        .collect()
}

fn other(encoding: Encoding) -> Encoding {
    match encoding {
        Encoding::Pickle => Encoding::Msgpack,
        Encoding::Msgpack => Encoding::Pickle,
    }
}

fn secs(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{}", d.as_secs_f64())
    }
}

/// The RAID's `zeoraid.toml`.
pub(crate) fn config(
    spec: &RaidSpec,
    opts: &ServerOpts,
    address: SocketAddr,
    dir: &Path,
    backends: &[RaidBackend],
) -> String {
    let mut c = String::from("[server]\n");
    let _ = writeln!(c, "listen = [\"{address}\"]");
    let _ = writeln!(c, "admin = {}", toml_string(&dir.join("admin.sock")));
    let encoding = match opts.encoding {
        Encoding::Pickle => "pickle",
        Encoding::Msgpack => "msgpack",
    };
    let _ = writeln!(c, "encoding = \"{encoding}\"");
    if opts.read_only {
        let _ = writeln!(c, "read_only = true");
    }
    if let Some(timeout) = opts.transaction_timeout {
        let _ = writeln!(c, "transaction_timeout = {}", secs(timeout));
    }
    let _ = writeln!(c, "\n[[storage]]\nname = \"1\"");
    let _ = writeln!(c, "state_file = {}", toml_string(&dir.join("1.raid-state")));
    let _ = writeln!(c, "call_timeout = {}", secs(spec.call_timeout));
    let _ = writeln!(c, "write_timeout = {}", secs(spec.write_timeout));
    let _ = writeln!(c, "connect_timeout = {}", secs(spec.connect_timeout));
    for b in backends {
        let _ = writeln!(c, "\n  [[storage.backend]]\n  name = \"{}\"", b.name);
        match (&b.server, b.unreachable) {
            (Some(server), _) => {
                let _ = writeln!(c, "  zeo = \"{}\"", server.address());
                let _ = writeln!(c, "  storage = \"1\"");
            }
            (None, Some(address)) => {
                let _ = writeln!(c, "  zeo = \"{address}\"");
                let _ = writeln!(c, "  storage = \"1\"");
            }
            (None, None) => {
                let _ = writeln!(c, "  path = {}", toml_string(&b.data));
                let _ = writeln!(c, "  blob_dir = {}", toml_string(&b.blobs));
            }
        }
    }
    c
}

/// The outcome of [`ServerProcess::check_mirrors`].
#[derive(Debug, Clone)]
pub struct MirrorReport {
    /// The backends compared.
    pub backends: Vec<String>,
    /// Transactions in each backend.
    pub transactions: u64,
    /// Data records in each backend.
    pub records: u64,
    /// Committed blob files in each backend.
    pub blobs: u64,
    /// Differences that are not failures (an equal extension pickled to other bytes).
    pub notes: Vec<String>,
    /// compare_backends.py's whole JSON report.
    pub json: String,
}

/// One storage to compare: name, `Data.fs`, blob directory.
pub type Mirror = (String, PathBuf, PathBuf);

impl ServerProcess {
    /// A RAID's backends (empty for the other kinds).
    pub fn backends(&self) -> &[RaidBackend] {
        &self.backends
    }

    /// Adds a new, empty backend of `kind` to a RAID (named after the last one: `c` after `a`
    /// and `b`): starts its `runzeo` process if it has one and rewrites `zeoraid.toml` with it,
    /// so that `zeoraid reload` adds it to the running front (and a restart keeps it). Returns
    /// its name.
    pub fn add_backend(&mut self, kind: BackendKind) -> Result<String, ServerError> {
        let ServerKind::Raid { spec, .. } = &self.kind else {
            return Err(ServerError::Check {
                what: "adding a backend".to_string(),
                details: format!("the {} server is not a RAID", self.kind.name()),
            });
        };
        let spec = spec.clone();
        let backend = start_backend(self.backends.len(), kind, &self.opts, &self.dir)?;
        let name = backend.name.clone();
        self.backends.push(backend);
        let path = self.dir.join("zeoraid.toml");
        let conf = config(&spec, &self.opts, self.address, &self.dir, &self.backends);
        std::fs::write(&path, conf)
            .map_err(crate::server::io_error(format!("writing {}", path.display())))?;
        Ok(name)
    }

    /// The `runzeo` process of the backend `name`.
    pub fn backend_server(&mut self, name: &str) -> Option<&mut ServerProcess> {
        self.backends.iter_mut().find(|b| b.name == name).and_then(|b| b.server.as_mut())
    }

    /// The admin socket: `admin.sock` in the directory (a RAID's config puts it there; the
    /// default `zeoraid serve --data DIR` is looked for there too).
    pub fn admin_socket(&self) -> Option<PathBuf> {
        match self.kind {
            ServerKind::Raid { .. } => Some(self.dir.join("admin.sock")),
            ServerKind::Zeoraid { .. } => Some(self.dir.join("admin.sock")).filter(|p| p.exists()),
            ServerKind::Runzeo => None,
        }
    }

    /// Runs `zeoraid ARGS... --admin SOCKET` (within two minutes) and returns its output.
    pub fn admin(&self, args: &[&str]) -> Result<Output, ServerError> {
        let (binary, socket) = match (&self.kind, self.admin_socket()) {
            (ServerKind::Raid { binary, .. } | ServerKind::Zeoraid { binary }, Some(socket)) => {
                (binary, socket)
            }
            _ => {
                return Err(ServerError::Check {
                    what: format!("zeoraid {}", args.join(" ")),
                    details: format!("the {} server has no admin socket", self.kind.name()),
                })
            }
        };
        let mut cmd = Command::new(binary);
        cmd.args(args).arg("--admin").arg(socket);
        run_with_deadline(cmd, CHECK_DEADLINE)
    }

    /// The Data.fs files the server writes (every backend's, for a RAID).
    pub fn data_files(&self) -> Vec<PathBuf> {
        self.mirrors().into_iter().map(|(_, data, _)| data).collect()
    }

    /// The storages that must hold identical histories.
    fn mirrors(&self) -> Vec<Mirror> {
        match &self.kind {
            ServerKind::Raid { .. } => self
                .backends
                .iter()
                .filter(|b| b.kind != BackendKind::Unreachable)
                .map(|b| (b.name.clone(), b.data.clone(), b.blobs.clone()))
                .collect(),
            ServerKind::Runzeo => vec![("runzeo".into(), self.dir.join("Data.fs"), self.dir.join("blobs"))],
            ServerKind::Zeoraid { .. } => {
                // The default serve: a RAID of local storages in subdirectories of `--data`.
                let mut found: Vec<Mirror> = std::fs::read_dir(&self.dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.join("Data.fs").is_file())
                    .filter_map(|p| {
                        let name = p.file_name()?.to_string_lossy().into_owned();
                        Some((name, p.join("Data.fs"), p.join("blobs")))
                    })
                    .collect();
                if self.dir.join("Data.fs").is_file() {
                    found.push((".".into(), self.dir.join("Data.fs"), self.dir.join("blobs")));
                }
                found.sort();
                found
            }
        }
    }

    /// Stops the front (SIGTERM), then every backend.
    pub fn stop_all(&mut self) -> Result<(), ServerError> {
        self.stop()?;
        for b in &mut self.backends {
            if let Some(server) = &mut b.server {
                server.stop()?;
            }
        }
        Ok(())
    }

    /// The check after a scenario: while the front runs, `zeoraid status` must say `optimal`
    /// (a RAID) and the front's transactions are listed (a ZEO client's iterator); then
    /// everything is stopped and every backend must hold the same history (transactions,
    /// records, blob files) with at least `min_transactions` transactions and every transaction
    /// the front listed. A RAID must have at least two backends.
    pub fn check_mirrors(&mut self, min_transactions: u64) -> Result<MirrorReport, ServerError> {
        let what = format!("the backends of the {} server in {}", self.kind.name(), self.dir.display());
        let front = self.dir.join("front.json");
        let _ = std::fs::remove_file(&front);
        if self.is_running() {
            if self.admin_socket().is_some() {
                let out = self.admin(&["status"])?;
                let stdout = String::from_utf8_lossy(&out.stdout);
                if !out.status.success() || stdout.trim() != "optimal" {
                    let details = self
                        .admin(&["details"])
                        .map_or_else(|e| e.to_string(), |o| String::from_utf8_lossy(&o.stdout).into_owned());
                    return Err(ServerError::Check {
                        what: format!("{what}: `zeoraid status` is not optimal ({})", out.status),
                        details: format!(
                            "status: {stdout}{}\ndetails:\n{details}",
                            String::from_utf8_lossy(&out.stderr)
                        ),
                    });
                }
            }
            let encoding = match self.opts.encoding {
                Encoding::Pickle => "pickle",
                Encoding::Msgpack => "msgpack",
            };
            let out = python(&["front", encoding, &self.address_arg()])?;
            if !out.status.success() {
                return Err(ServerError::Check {
                    what: format!("{what}: listing the front's transactions failed ({})", out.status),
                    details: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
            std::fs::write(&front, &out.stdout)
                .map_err(crate::server::io_error(format!("writing {}", front.display())))?;
        }
        self.stop_all()?;
        let mirrors = self.mirrors();
        let needed = if matches!(self.kind, ServerKind::Runzeo) { 1 } else { 2 };
        if mirrors.len() < needed {
            return Err(ServerError::Check {
                what: format!("{what}: {} storages found, expected at least {needed}", mirrors.len()),
                details: format!("{mirrors:?}"),
            });
        }
        let front = Some(front.as_path()).filter(|f| f.exists());
        compare_backends(&what, &mirrors, min_transactions, front)
    }

    /// The backend `name` as a storage to compare (name, `Data.fs`, blob directory).
    pub fn mirror(&self, name: &str) -> Option<Mirror> {
        self.backends
            .iter()
            .find(|b| b.name == name)
            .map(|b| (b.name.clone(), b.data.clone(), b.blobs.clone()))
    }
}

/// Compares the histories of stopped storages with compare_backends.py: identical, at least
/// `min_transactions` each, and every transaction of `front` (a file with the tids a client saw
/// acknowledged or listed) in each.
pub fn compare_backends(
    what: &str,
    mirrors: &[Mirror],
    min_transactions: u64,
    front: Option<&Path>,
) -> Result<MirrorReport, ServerError> {
    let mut args: Vec<String> =
        vec!["compare".into(), "--min-transactions".into(), min_transactions.to_string()];
    if let Some(front) = front {
        args.push("--front".into());
        args.push(front.to_string_lossy().into_owned());
    }
    for (name, data, blobs) in mirrors {
        args.push("--backend".into());
        args.push(name.clone());
        args.push(data.to_string_lossy().into_owned());
        args.push(blobs.to_string_lossy().into_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = python(&args)?;
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(ServerError::Check {
            what: format!("{what} differ ({})", out.status),
            details: format!("{json}{}", String::from_utf8_lossy(&out.stderr)),
        });
    }
    let value: serde_json::Value = serde_json::from_str(&json).map_err(|e| ServerError::Check {
        what: format!("{what}: compare_backends.py printed no JSON ({e})"),
        details: json.clone(),
    })?;
    let count = |key: &str| value.get(key).and_then(serde_json::Value::as_u64).unwrap_or(0);
    Ok(MirrorReport {
        backends: mirrors.iter().map(|(name, _, _)| name.clone()).collect(),
        transactions: count("transactions"),
        records: count("records"),
        blobs: count("blobs"),
        notes: value
            .get("notes")
            .and_then(serde_json::Value::as_array)
            .map(|a| a.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect())
            .unwrap_or_default(),
        json,
    })
}

/// Runs `compare_backends.py ARGS...` with the pinned venv.
fn python(args: &[&str]) -> Result<Output, ServerError> {
    let mut cmd = PythonEnv::get().command();
    cmd.arg(scripts_dir().join("compare_backends.py")).args(args);
    run_with_deadline(cmd, CHECK_DEADLINE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_pick_the_kinds() {
        assert_eq!(RaidSpec::from_name("raid-zeo").map(|s| s.backends), Some(vec![BackendKind::Runzeo; 2]));
        assert_eq!(
            RaidSpec::from_name("raid-mixed").map(|s| s.backends),
            Some(vec![BackendKind::Local, BackendKind::Runzeo])
        );
        assert_eq!(RaidSpec::from_name("raid-local").map(|s| s.backends), Some(vec![BackendKind::Local; 2]));
        assert_eq!(RaidSpec::from_name("raid"), None);
    }

    #[test]
    fn the_config_names_every_backend_and_deadline() {
        let spec = RaidSpec::local().with_timeouts(
            Duration::from_millis(1500),
            Duration::from_secs(3),
            Duration::from_secs(2),
        );
        let dir = Path::new("/x/r");
        let backends = vec![
            RaidBackend {
                name: "a".into(),
                kind: BackendKind::Local,
                data: dir.join("a/Data.fs"),
                blobs: dir.join("a/blobs"),
                server: None,
                unreachable: None,
            },
            RaidBackend {
                name: "b".into(),
                kind: BackendKind::Local,
                data: dir.join("b/Data.fs"),
                blobs: dir.join("b/blobs"),
                server: None,
                unreachable: None,
            },
        ];
        let opts = ServerOpts { read_only: true, ..ServerOpts::new(Encoding::Msgpack) };
        let conf = config(&spec, &opts, SocketAddr::from(([127, 0, 0, 1], 8100)), dir, &backends);
        for line in [
            "listen = [\"127.0.0.1:8100\"]",
            "admin = \"/x/r/admin.sock\"",
            "encoding = \"msgpack\"",
            "read_only = true",
            "state_file = \"/x/r/1.raid-state\"",
            "call_timeout = 1.5",
            "write_timeout = 3",
            "connect_timeout = 2",
            "  path = \"/x/r/b/Data.fs\"",
            "  blob_dir = \"/x/r/a/blobs\"",
        ] {
            assert!(conf.lines().any(|l| l == line), "no line {line:?} in\n{conf}");
        }
        assert_eq!(conf.matches("[[storage.backend]]").count(), 2, "{conf}");
    }
}
