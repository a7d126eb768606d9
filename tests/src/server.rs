//! A ZEO server process for one whole-process test: stock ZEO's `runzeo` from the pinned venv,
//! or `zeoraid serve`, on a free loopback port, with its data in a scratch directory.
//!
//! ```text
//!   start ──▶ Running ──stop()──▶ Stopped ──restart()/restart_with()──▶ Running
//!               │   ▲                                                     │
//!               │   └──────────────────── restart() ──────────────────────┘
//!               └── Drop: SIGKILL, wait; the scratch directory is removed unless the thread
//!                   is panicking (then the tails of the server's logs are printed and the
//!                   directory is kept for a post-mortem).
//! ```
//!
//! Invariants: while Running, the child has accepted a TCP connection on `address()` and sent its
//! handshake frame (`Z5`/`M5`, the letter of the configured encoding) — [`ServerProcess`] never
//! hands out a server that is not ready. The port and the data directory stay the same across
//! restarts, so clients reconnect to the same address and see the same storage. Every start
//! writes its stdout and stderr to new files `<generation>.stdout`/`.stderr` in the directory.
//!
//! Ports: a free port is found by binding `127.0.0.1:0` and closing it again (never the same port
//! twice in one test process), so another socket may take it before the server binds it. When the
//! server then dies (address in use), the start is retried on a new port. Readiness needs our
//! child alive, its own log saying it listens on the port, and then its handshake: a handshake
//! alone may come from another server on that port (a CI run once mirrored onto another test's
//! runzeo that way).
//!
//! No new crates: SIGTERM is sent with the `kill` command.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use zeoraid_core::wire::Encoding;

pub use crate::binaries::{zeoraid_binary, zeoraid_load_binary};
use crate::ports::{free_port, keep_listening_line, says_listening_on};
use crate::python::{target_dir, PythonEnv};
use crate::raid::{self, RaidBackend, RaidSpec};

/// How long a server may take to accept a connection and send its handshake.
pub const START_DEADLINE: Duration = Duration::from_secs(20);

/// How long a server may take to exit after SIGTERM before it is killed.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// How many lines of each log [`ServerProcess::log_tail`] shows.
const TAIL_LINES: usize = 40;

/// What went wrong with a server process or a client command.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: io::Error,
    },
    /// The server exited or did not become ready in time.
    #[error("the {kind} server on {address} did not start: {reason}\n{logs}")]
    StartFailed {
        /// runzeo or zeoraid.
        kind: &'static str,
        /// The address it should have listened on.
        address: SocketAddr,
        /// What was seen.
        reason: String,
        /// The tails of its stdout and stderr.
        logs: String,
    },
    /// A command run with [`run_with_deadline`] did not finish in time and was killed.
    #[error("`{command}` did not finish within {timeout:?} and was killed\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")]
    TimedOut {
        /// The command line.
        command: String,
        /// The deadline.
        timeout: Duration,
        /// What it printed on stdout.
        stdout: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A check of the server's state failed (the backends' histories differ, the RAID is not
    /// optimal, an admin command failed).
    #[error("{what}\n{details}")]
    Check {
        /// What was checked.
        what: String,
        /// What was found.
        details: String,
    },
    /// `cargo build` of a zeoraid binary failed.
    #[error("`cargo build --release -p zeoraid-server --bin {bin}` failed ({status})\n{stderr}")]
    BuildFailed {
        /// The binary.
        bin: String,
        /// How cargo ended.
        status: ExitStatus,
        /// cargo's stderr.
        stderr: String,
    },
}

pub(crate) fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> ServerError {
    let context = context.into();
    move |source| ServerError::Io { context, source }
}

/// Which server program a [`ServerProcess`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerKind {
    /// `<binary> serve --config` with a generated RAID config over the backends `spec` names
    /// (stock `runzeo` processes started first, and/or local storages); see [`crate::raid`].
    Raid {
        /// The zeoraid executable (see [`zeoraid_binary`]).
        binary: PathBuf,
        /// The backends and the deadlines.
        spec: RaidSpec,
    },
    /// Stock ZEO 6.2: `python -m ZEO.runzeo -C zeo.conf` from the pinned venv.
    Runzeo,
    /// `<binary> serve ...`.
    Zeoraid {
        /// The zeoraid executable (see [`zeoraid_binary`]).
        binary: PathBuf,
    },
}

impl ServerKind {
    /// `runzeo` or `zeoraid`, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            ServerKind::Runzeo => "runzeo",
            ServerKind::Zeoraid { .. } => "zeoraid",
            ServerKind::Raid { spec, .. } => spec.label,
        }
    }
}

/// How a server is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOpts {
    /// The encoding the server announces (`Z5` or `M5`).
    pub encoding: Encoding,
    /// Serve the storage read-only.
    pub read_only: bool,
    /// Abort a transaction whose vote was not followed by finish/abort within this time
    /// (runzeo's `transaction-timeout`; zeoraid's `[server] transaction_timeout`, seconds).
    pub transaction_timeout: Option<Duration>,
    /// runzeo: pack with garbage collection (FileStorage's default). Off for RAID backends:
    /// zeoraid's own storages pack without GC, and a RAID's backends must pack alike.
    pub pack_gc: bool,
}

impl ServerOpts {
    /// Read-write, no transaction timeout, pack with GC, the given encoding.
    pub fn new(encoding: Encoding) -> ServerOpts {
        ServerOpts { encoding, read_only: false, transaction_timeout: None, pack_gc: true }
    }
}

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A running (or stopped) ZEO server process; see the module documentation.
#[derive(Debug)]
pub struct ServerProcess {
    pub(crate) kind: ServerKind,
    pub(crate) opts: ServerOpts,
    pub(crate) dir: PathBuf,
    pub(crate) address: SocketAddr,
    pub(crate) child: Option<Child>,
    pub(crate) generation: u32,
    /// How long the last start took from spawning the process to its handshake.
    pub(crate) ready_after: Option<Duration>,
    /// A RAID's backends (empty for the other kinds), started before the front and stopped
    /// after it.
    pub(crate) backends: Vec<RaidBackend>,
}

impl ServerProcess {
    /// Starts stock ZEO (`runzeo`) with a FileStorage `1` and a blob directory, in
    /// client-conflict-resolution mode.
    pub fn runzeo(opts: ServerOpts) -> Result<ServerProcess, ServerError> {
        Self::start(ServerKind::Runzeo, opts)
    }

    /// Starts `<binary> serve` on a FileStorage `1` with a blob directory.
    pub fn zeoraid(binary: &Path, opts: ServerOpts) -> Result<ServerProcess, ServerError> {
        Self::start(ServerKind::Zeoraid { binary: binary.to_path_buf() }, opts)
    }

    /// Starts a server of `kind` in a new scratch directory.
    pub fn start(kind: ServerKind, opts: ServerOpts) -> Result<ServerProcess, ServerError> {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let dir = target_dir().join("tmp").join("zeo-servers").join(format!(
            "{}-{}-{n}",
            kind.name(),
            std::process::id()
        ));
        Self::start_in(kind, opts, dir)
    }

    /// Starts a server of `kind` in `dir` (emptied first). A RAID starts its backends first.
    pub(crate) fn start_in(
        kind: ServerKind,
        opts: ServerOpts,
        dir: PathBuf,
    ) -> Result<ServerProcess, ServerError> {
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io_error(format!("removing {}", dir.display())))?;
        }
        fs::create_dir_all(&dir).map_err(io_error(format!("creating {}", dir.display())))?;
        let mut server = ServerProcess {
            kind,
            opts,
            dir,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            child: None,
            generation: 0,
            ready_after: None,
            backends: Vec::new(),
        };
        if let ServerKind::Raid { spec, .. } = &server.kind {
            server.backends = raid::start_backends(spec, &server.opts, &server.dir)?;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            server.address = free_port()?;
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                // The port was probably taken between our probe and the server's bind.
                Err(ServerError::StartFailed { reason, .. })
                    if attempt < 3 && reason.starts_with(EXITED) && server.logs_mention_addr_in_use() =>
                {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The address clients connect to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The address as `host:port`, for the Python scripts.
    pub fn address_arg(&self) -> String {
        self.address.to_string()
    }

    /// The scratch directory (the storage is `Data.fs` and `blobs/` in it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's configuration.
    pub fn opts(&self) -> &ServerOpts {
        &self.opts
    }

    /// Which program runs.
    pub fn kind(&self) -> &ServerKind {
        &self.kind
    }

    /// Whether the server process is running (it was started and has not exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// How long the last start took from spawning the process until it sent its handshake on
    /// a fresh connection (its readiness is probed every 50 ms).
    pub fn ready_after(&self) -> Option<Duration> {
        self.ready_after
    }

    /// The process id while a process was started and not yet reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (a name `kill` knows: `STOP`, `CONT`, `TERM`, ...) to the running server.
    pub fn signal(&self, signal: &str) -> Result<(), ServerError> {
        let Some(pid) = self.pid() else {
            return Err(ServerError::Io {
                context: format!("sending SIG{signal}"),
                source: io::Error::new(io::ErrorKind::NotFound, "the server is not running"),
            });
        };
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .status()
            .map_err(io_error(format!("running kill -{signal} {pid}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(ServerError::Io {
                context: format!("kill -{signal} {pid}"),
                source: io::Error::other(format!("kill exited with {status}")),
            })
        }
    }

    /// Stops the server with SIGTERM, waits for it to exit (SIGKILL after
    /// [`STOP_DEADLINE`]) and returns how it ended (`None` when it was not running).
    pub fn stop(&mut self) -> Result<Option<ExitStatus>, ServerError> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Ok(Some(status));
        }
        // `kill` is a shell utility everywhere the tests run; if it fails, SIGKILL below.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(Some(status)),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Ok(None) | Err(_) => {
                    let _ = child.kill();
                    return child.wait().map(Some).map_err(io_error("waiting for the killed server"));
                }
            }
        }
    }

    /// Kills the server with SIGKILL (`kill -9`: no clean-up, connections reset) and reaps it.
    pub fn kill(&mut self) -> Result<(), ServerError> {
        if let Some(child) = self.child.as_mut() {
            // Already exited is fine; `wait` reaps it either way.
            let _ = child.kill();
            child.wait().map_err(io_error("waiting for the killed server"))?;
        }
        Ok(())
    }

    /// Stops the server (if running) and starts it again on the same port and data.
    pub fn restart(&mut self) -> Result<(), ServerError> {
        let opts = self.opts.clone();
        self.restart_with(opts)
    }

    /// Like [`ServerProcess::restart`], with other options (e.g. read-only) on the same data.
    pub fn restart_with(&mut self, opts: ServerOpts) -> Result<(), ServerError> {
        self.stop()?;
        self.opts = opts;
        // The port was ours a moment ago; if it is busy, give the kernel a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.spawn_and_wait() {
                Err(ServerError::StartFailed { reason, .. })
                    if Instant::now() < deadline
                        && reason.starts_with(EXITED)
                        && self.logs_mention_addr_in_use() =>
                {
                    std::thread::sleep(Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    /// The last lines of the current (or last) run's stdout and stderr.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for stream in ["stdout", "stderr"] {
            let path = self.log_path(stream);
            let text = fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(TAIL_LINES);
            let _ = writeln!(
                out,
                "--- {} {stream} ({}, last {} of {} lines) ---",
                self.kind.name(),
                path.display(),
                lines.len() - from,
                lines.len()
            );
            for line in &lines[from..] {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }

    fn log_path(&self, stream: &str) -> PathBuf {
        self.dir.join(format!("{}.{stream}", self.generation))
    }

    fn logs_say_listening(&self) -> bool {
        ["stdout", "stderr"].iter().any(|s| {
            fs::read_to_string(self.log_path(s)).is_ok_and(|t| says_listening_on(&t, self.address.port()))
        })
    }

    fn logs_mention_addr_in_use(&self) -> bool {
        ["stdout", "stderr"].iter().any(|s| {
            fs::read_to_string(self.log_path(s))
                .is_ok_and(|t| t.to_lowercase().contains("address already in use"))
        })
    }

    /// Writes the configuration, spawns the process and waits until it is ready.
    fn spawn_and_wait(&mut self) -> Result<(), ServerError> {
        self.generation += 1;
        let mut cmd = self.command()?;
        let stdout = File::create(self.log_path("stdout")).map_err(io_error("creating the stdout log"))?;
        let stderr = File::create(self.log_path("stderr")).map_err(io_error("creating the stderr log"))?;
        cmd.current_dir(&self.dir).stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        let spawned = Instant::now();
        let child = spawn(&mut cmd).map_err(io_error(format!("starting the {} server", self.kind.name())))?;
        self.child = Some(child);
        match self.wait_ready() {
            Ok(()) => {
                self.ready_after = Some(spawned.elapsed());
                Ok(())
            }
            Err(reason) => {
                // Kill it (if alive) so the logs are complete, then report.
                if let Some(mut child) = self.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                Err(ServerError::StartFailed {
                    kind: self.kind.name(),
                    address: self.address,
                    reason,
                    logs: self.log_tail(),
                })
            }
        }
    }

    fn command(&self) -> Result<Command, ServerError> {
        match &self.kind {
            ServerKind::Runzeo => {
                let data = self.dir.join("Data.fs");
                let blobs = self.dir.join("blobs");
                let mut conf = String::new();
                let _ = writeln!(conf, "<zeo>\n  address {}", self.address);
                let _ = writeln!(conf, "  msgpack {}", self.opts.encoding == Encoding::Msgpack);
                let _ = writeln!(conf, "  read-only {}", self.opts.read_only);
                let _ = writeln!(conf, "  client-conflict-resolution true");
                if let Some(timeout) = self.opts.transaction_timeout {
                    let _ = writeln!(conf, "  transaction-timeout {}", timeout.as_secs().max(1));
                }
                let _ = writeln!(conf, "</zeo>\n<filestorage 1>");
                let _ = writeln!(conf, "  path {}\n  blob-dir {}", data.display(), blobs.display());
                if self.opts.read_only {
                    let _ = writeln!(conf, "  read-only true");
                }
                if !self.opts.pack_gc {
                    let _ = writeln!(conf, "  pack-gc false");
                }
                let _ = writeln!(conf, "</filestorage>");
                let path = self.dir.join("zeo.conf");
                fs::write(&path, conf).map_err(io_error(format!("writing {}", path.display())))?;
                let mut cmd = PythonEnv::get().command();
                cmd.args(["-m", "ZEO.runzeo", "-C"]).arg(&path);
                // runzeo takes the encoding from the config; make sure the environment does not
                // override it.
                cmd.env_remove("ZEO_MSGPACK").env_remove("ZEO_SERVER_PROTOCOL");
                Ok(cmd)
            }
            ServerKind::Raid { binary, spec } => {
                let path = self.dir.join("zeoraid.toml");
                let conf = raid::config(spec, &self.opts, self.address, &self.dir, &self.backends);
                fs::write(&path, conf).map_err(io_error(format!("writing {}", path.display())))?;
                let mut cmd = Command::new(binary);
                cmd.arg("serve").arg("--config").arg(&path);
                keep_listening_line(&mut cmd);
                Ok(cmd)
            }
            ServerKind::Zeoraid { binary } => {
                let mut cmd = Command::new(binary);
                cmd.arg("serve");
                keep_listening_line(&mut cmd);
                let plain = self.opts == ServerOpts::new(Encoding::Pickle);
                if plain {
                    cmd.arg("--listen").arg(self.address.to_string()).arg("--data").arg(&self.dir);
                } else {
                    // The default serve's shape (two local backends) with the options in a file.
                    let backends = raid::local_backends(&self.dir, 2);
                    let conf =
                        raid::config(&RaidSpec::local(), &self.opts, self.address, &self.dir, &backends);
                    let path = self.dir.join("zeoraid.toml");
                    fs::write(&path, conf).map_err(io_error(format!("writing {}", path.display())))?;
                    cmd.arg("--config").arg(&path);
                }
                Ok(cmd)
            }
        }
    }

    /// Polls until the server sends its handshake on a fresh connection; `Err` says why not.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        let expected = [self.opts.encoding.letter(), b'5'];
        let mut last = String::from("no connection attempt yet");
        loop {
            match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => {}
                Some(Ok(Some(status))) => return Err(format!("{EXITED} ({status}); last probe: {last}")),
                Some(Err(e)) => return Err(format!("cannot wait for the process: {e}")),
                None => return Err("no process".into()),
            }
            if Instant::now() >= deadline {
                return Err(format!("not ready after {START_DEADLINE:?}; last probe: {last}"));
            }
            // Until our child says it listens, a handshake on the port may come from another
            // server that took the port first (our child then dies with "address in use").
            if !self.logs_say_listening() {
                last = "the server's log does not say it is listening yet".into();
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            match read_handshake(self.address) {
                Ok(frame) if frame == expected => return Ok(()),
                Ok(frame) => {
                    return Err(format!(
                        "its handshake frame is {:?}, expected {:?}",
                        String::from_utf8_lossy(&frame),
                        String::from_utf8_lossy(&expected)
                    ))
                }
                Err(e) => {
                    last = e.to_string();
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

/// The start of the reason when the server process exited while starting.
const EXITED: &str = "the process exited";

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The backends (their directories are inside ours) go first, printing their own logs
        // when the thread panics.
        self.backends.clear();
        if std::thread::panicking() {
            eprintln!(
                "{} server on {} (directory kept: {})\n{}",
                self.kind.name(),
                self.address,
                self.dir.display(),
                self.log_tail()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// `cmd.spawn()`, retried for a moment on ETXTBSY: an executable written just before (a fresh
/// build, a test's stand-in script) can be "busy" while another thread's fork still holds the
/// file descriptor it was written through.
fn spawn(cmd: &mut Command) -> io::Result<Child> {
    let mut attempts = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.kind() == io::ErrorKind::ExecutableFileBusy && attempts < 50 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Connects and reads the first frame (4-byte big-endian length, then the payload).
fn read_handshake(address: SocketAddr) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len);
    if len > 64 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a first frame of {len} bytes")));
    }
    let mut frame = vec![0u8; len as usize];
    stream.read_exact(&mut frame)?;
    Ok(frame)
}

/// A TOML basic string.
pub(crate) fn toml_string(path: &Path) -> String {
    let mut out = String::from("\"");
    for c in path.to_string_lossy().chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Runs `cmd` (stdin closed) and returns its output, killing it after `timeout`.
pub fn run_with_deadline(mut cmd: Command, timeout: Duration) -> Result<Output, ServerError> {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let _ = write!(line, " {}", arg.to_string_lossy());
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_error(format!("starting `{line}`")))?;
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out_thread = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err_thread = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait().map_err(io_error(format!("waiting for `{line}`")))? {
            Some(status) => break status,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            None => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().map_err(io_error(format!("waiting for the killed `{line}`")))?;
            }
        }
    };
    let stdout = out_thread.join().unwrap_or_default();
    let stderr = err_thread.join().unwrap_or_default();
    if timed_out {
        return Err(ServerError::TimedOut {
            command: line,
            timeout,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        });
    }
    Ok(Output { status, stdout, stderr })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(Path::new("/a/b c")), "\"/a/b c\"");
        assert_eq!(toml_string(Path::new("/a\"b\\c")), "\"/a\\\"b\\\\c\"");
    }

    /// A stand-in for `zeoraid` that prints its arguments (and its config file) and exits.
    #[cfg(unix)]
    fn fake_server(name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = target_dir().join("tmp").join("zeo-servers");
        fs::create_dir_all(&dir).expect("create the scratch directory");
        let path = dir.join(format!("fake-{name}-{}.sh", std::process::id()));
        let script = "#!/bin/sh\necho \"fake zeoraid: $*\" >&2\n\
                      if [ \"$2\" = --config ]; then cat \"$3\" >&2; fi\nexit 3\n";
        fs::write(&path, script).expect("write the fake server");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod the fake server");
        path
    }

    #[cfg(unix)]
    #[test]
    fn a_server_that_exits_fails_the_start_with_its_stderr() {
        let fake = fake_server("plain");
        let err = ServerProcess::zeoraid(&fake, ServerOpts::new(Encoding::Pickle))
            .expect_err("a server that exits at once must not be ready");
        let ServerError::StartFailed { kind, address, ref reason, ref logs } = err else {
            panic!("expected StartFailed, got {err}");
        };
        assert_eq!(kind, "zeoraid");
        assert!(reason.starts_with(EXITED), "{reason}");
        let expected = format!("fake zeoraid: serve --listen {address} --data ");
        assert!(logs.contains(&expected), "{logs}");
        let _ = fs::remove_file(fake);
    }

    #[cfg(unix)]
    #[test]
    fn zeoraid_gets_a_config_file_for_msgpack_and_read_only() {
        let fake = fake_server("config");
        let opts = ServerOpts { read_only: true, ..ServerOpts::new(Encoding::Msgpack) };
        let err = ServerProcess::zeoraid(&fake, opts).expect_err("the fake server exits");
        let ServerError::StartFailed { address, ref logs, .. } = err else {
            panic!("expected StartFailed, got {err}");
        };
        assert!(logs.contains("fake zeoraid: serve --config "), "{logs}");
        for line in [
            "[server]".to_string(),
            format!("listen = [\"{address}\"]"),
            "encoding = \"msgpack\"".to_string(),
            "read_only = true".to_string(),
            "[[storage]]".to_string(),
            "name = \"1\"".to_string(),
        ] {
            assert!(logs.lines().any(|l| l == line), "no line {line:?} in\n{logs}");
        }
        // Two local backends, as the default serve.
        assert!(logs.lines().any(|l| l.starts_with("  path = \"") && l.ends_with("/a/Data.fs\"")), "{logs}");
        assert!(
            logs.lines().any(|l| l.starts_with("  blob_dir = \"") && l.ends_with("/b/blobs\"")),
            "{logs}"
        );
        let _ = fs::remove_file(fake);
    }

    #[test]
    fn run_with_deadline_kills_a_hanging_command() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let started = Instant::now();
        let err = run_with_deadline(cmd, Duration::from_millis(300)).expect_err("sleep 30 must time out");
        assert!(matches!(err, ServerError::TimedOut { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn run_with_deadline_returns_the_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let out = run_with_deadline(cmd, Duration::from_secs(20)).expect("sh runs");
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }
}
