//! The `zeoraid` command: `serve`, `check-config`, and the manager commands `status`,
//! `details`, `disable`, `recover`, `reload` (through the admin socket of a running server).
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use tracing::info;
use tracing_subscriber::EnvFilter;
use zeoraid_server::admin::{self, AdminReply, Command as AdminCommand, ReloadSource};
use zeoraid_server::config::{Config, ListenAddr, ADMIN_SOCKET, DEFAULT_DATA};
use zeoraid_server::driver::Driver;
use zeoraid_server::net::{Listener, Net, TokioNet};
use zeoraid_server::startup::{self, RealOpener};

/// zeoraid: a RAID-1 server for ZODB that speaks ZEO.
#[derive(Debug, Parser)]
#[command(name = "zeoraid", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve storages over ZEO (without a config: storage "1" in ./var on 127.0.0.1:8100).
    Serve(ServeArgs),
    /// Validate a configuration file and print a summary (exit 0 if valid, 1 if not).
    CheckConfig {
        /// The configuration file (TOML).
        file: PathBuf,
    },
    /// Print the worst RAID status in one word; exit 0 optimal, 1 recovering, 2 degraded or
    /// failed, 3 when the server cannot be asked (Nagios UNKNOWN).
    Status(AdminArgs),
    /// Print every backend of every storage (state, reason, since, last tid), the running
    /// recovery's progress and how the last recovery ended.
    Details {
        /// Print the server's JSON reply instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Take a backend out of its RAID (refused for the last optimal one).
    Disable {
        /// The backend's name.
        name: String,
        /// Its storage (needed when the server has several).
        #[arg(long, value_name = "S")]
        storage: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Rebuild a degraded, disabled or newly added backend online from an optimal one.
    /// Exit 0 when started (with --wait: when the backend is optimal), 1 when refused, 2 when
    /// the recovery failed (--wait).
    Recover {
        /// The backend's name.
        name: String,
        /// Its storage (needed when the server has several).
        #[arg(long, value_name = "S")]
        storage: Option<String>,
        /// Bytes copied per second for this run: an integer or with a unit (20MB, 512KiB), or
        /// `unlimited` [default: the storage's recovery_rate_bytes].
        #[arg(long, value_name = "N", value_parser = parse_rate_bytes)]
        rate_bytes: Option<u64>,
        /// Transactions copied per second for this run, or `unlimited` [default: the
        /// storage's recovery_rate_txns].
        #[arg(long, value_name = "N", value_parser = parse_rate_txns)]
        rate_txns: Option<u64>,
        /// Wait for the end, printing the progress every second (interrupting the wait does
        /// not stop the recovery).
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Have the server re-read its configuration file (new backends join degraded, removed
    /// ones are closed; a file that does not load changes nothing).
    Reload(AdminArgs),
}

#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// The server's admin socket [default: var/admin.sock, the default serve's].
    #[arg(long, value_name = "PATH", conflicts_with = "config")]
    admin: Option<PathBuf>,
    /// Take the admin socket from this configuration file (`[server] admin`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Configuration file (TOML); without one, a single storage "1" is served.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen on ADDR (IP:PORT or unix:PATH) instead of the configured addresses; repeatable.
    #[arg(long, value_name = "ADDR")]
    listen: Vec<ListenAddr>,
    /// Data directory: without a config, storage "1" is a RAID of DIR/a/Data.fs and
    /// DIR/b/Data.fs (blobs in DIR/a/blobs, DIR/b/blobs), state DIR/1.raid-state, admin socket
    /// DIR/admin.sock [default: ./var]; with one, relocates its single local storage.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Log level or filter (error, warn, info, debug, trace, or RUST_LOG syntax); overrides
    /// RUST_LOG [default: RUST_LOG, else info].
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            if let Err(e) = init_logs(args.log_level.as_deref()) {
                eprintln!("zeoraid: {e}");
                return ExitCode::FAILURE;
            }
            match serve(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("zeoraid: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(cfg) => {
                print!("{}: valid\n{}", file.display(), cfg.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("zeoraid: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Status(a) => manage(&a, &AdminCommand::Status),
        Command::Details { json: false, admin } => manage(&admin, &AdminCommand::Details),
        Command::Details { json: true, admin } => details_json(&admin),
        Command::Disable { name, storage, admin } => manage(&admin, &AdminCommand::Disable { storage, name }),
        Command::Recover { name, storage, rate_bytes, rate_txns, wait, admin } => {
            let cmd = AdminCommand::Recover {
                storage: storage.clone(),
                backend: name.clone(),
                rate_bytes,
                rate_txns,
            };
            let code = manage(&admin, &cmd);
            if !wait || code != ExitCode::SUCCESS {
                return code;
            }
            recover_wait(&admin, storage.as_deref(), &name)
        }
        Command::Reload(a) => manage(&a, &AdminCommand::Reload),
    }
}

/// How long a manager command waits for the server (a reload may open a storage).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);
/// `status`'s exit code when the server cannot be asked (Nagios UNKNOWN).
const UNKNOWN: u8 = 3;

/// Runs a manager command against the admin socket.
fn manage(args: &AdminArgs, cmd: &AdminCommand) -> ExitCode {
    let unknown = if matches!(cmd, AdminCommand::Status) { UNKNOWN } else { 1 };
    let path = match admin_path(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("zeoraid: {e}");
            return ExitCode::from(unknown);
        }
    };
    let reply = match admin::request(&path, cmd, ADMIN_TIMEOUT) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("zeoraid: {e}");
            return ExitCode::from(unknown);
        }
    };
    if !reply.ok {
        eprintln!("zeoraid: {}", reply.error.as_deref().unwrap_or("refused"));
        return ExitCode::from(if matches!(cmd, AdminCommand::Status) { UNKNOWN } else { 1 });
    }
    match cmd {
        AdminCommand::Status => {
            let word = reply.status.as_deref().unwrap_or("unknown");
            println!("{word}");
            ExitCode::from(match word {
                "optimal" => 0,
                "recovering" => 1,
                "degraded" | "failed" => 2,
                _ => UNKNOWN,
            })
        }
        AdminCommand::Details => {
            print!("{}", details_table(&reply));
            ExitCode::SUCCESS
        }
        AdminCommand::Disable { .. } | AdminCommand::Reload | AdminCommand::Recover { .. } => {
            for n in &reply.notes {
                println!("{n}");
            }
            ExitCode::SUCCESS
        }
    }
}

/// `details --json`: the reply line as the server sent it (re-encoded), exit as `details`.
fn details_json(args: &AdminArgs) -> ExitCode {
    let reply = match admin_path(args)
        .and_then(|p| admin::request(&p, &AdminCommand::Details, ADMIN_TIMEOUT).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("zeoraid: {e}");
            return ExitCode::FAILURE;
        }
    };
    match serde_json::to_string(&reply) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("zeoraid: {e}");
            return ExitCode::FAILURE;
        }
    }
    if reply.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `--rate-bytes`: a byte count, or `unlimited` (sent as 0).
fn parse_rate_bytes(s: &str) -> Result<u64, String> {
    if s.eq_ignore_ascii_case("unlimited") {
        return Ok(0);
    }
    zeoraid_server::config::rate::parse_bytes(s)
}

/// `--rate-txns`: a positive integer, or `unlimited` (sent as 0).
fn parse_rate_txns(s: &str) -> Result<u64, String> {
    if s.eq_ignore_ascii_case("unlimited") {
        return Ok(0);
    }
    s.parse::<u64>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("{s:?} is not a number of transactions per second (1 or more, or unlimited)"))
}

/// How often `recover --wait` asks for the progress.
const WAIT_POLL: Duration = Duration::from_secs(1);
/// Polls in a row that may see the backend neither recovering nor optimal before `--wait`
/// takes the recovery as ended (the server may report the end a moment later).
const WAIT_GRACE_POLLS: u32 = 3;
/// `recover --wait`'s exit code when the recovery failed.
const RECOVERY_FAILED: u8 = 2;

/// `recover --wait`: a progress line every second until the backend is optimal (exit 0) or the
/// recovery ended without making it optimal (exit 2).
fn recover_wait(args: &AdminArgs, storage: Option<&str>, name: &str) -> ExitCode {
    let asked = wall_now();
    let path = match admin_path(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("zeoraid: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stray = 0;
    loop {
        std::thread::sleep(WAIT_POLL);
        let reply = match admin::request(&path, &AdminCommand::Details, ADMIN_TIMEOUT) {
            Ok(r) if r.ok => r,
            Ok(r) => {
                eprintln!("zeoraid: {}", r.error.as_deref().unwrap_or("refused"));
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("zeoraid: {e}");
                return ExitCode::FAILURE;
            }
        };
        let found = reply
            .storages
            .iter()
            .find(|s| storage.is_none_or(|n| s.name == n) && s.backends.iter().any(|b| b.name == name));
        let Some(st) = found else {
            eprintln!("zeoraid: backend {name} is gone from the server");
            return ExitCode::from(RECOVERY_FAILED);
        };
        let state = st.backends.iter().find(|b| b.name == name).map(|b| b.state.as_str()).unwrap_or("-");
        let running = st.recovery.as_ref().filter(|r| r.target == name);
        if let Some(r) = running {
            println!("{}", admin::progress_line(r));
            stray = 0;
            continue;
        }
        if state == "recovering" {
            println!("recovery of {name}: starting");
            stray = 0;
            continue;
        }
        // A recent end of this backend's recovery (the clocks are the same machine's).
        let ended = st.last_recovery.as_ref().filter(|e| e.target == name && e.at >= asked - 5.0);
        if state == "optimal" {
            match ended {
                Some(e) => println!(
                    "recovery of {name} done: optimal; {} transaction(s), {} copied in {}",
                    e.txns_copied,
                    admin::human_bytes(e.bytes_copied as f64),
                    admin::human_secs(e.at - asked)
                ),
                None => println!("recovery of {name} done: optimal"),
            }
            return ExitCode::SUCCESS;
        }
        if let Some(e) = ended.filter(|e| !e.ok) {
            eprintln!(
                "zeoraid: recovery of {name} failed: {}",
                e.failure.as_deref().unwrap_or("no reason given")
            );
            return ExitCode::from(RECOVERY_FAILED);
        }
        stray += 1;
        if stray >= WAIT_GRACE_POLLS {
            let reason = st
                .backends
                .iter()
                .find(|b| b.name == name)
                .and_then(|b| b.reason.clone())
                .unwrap_or_else(|| "no reason given".to_string());
            eprintln!("zeoraid: recovery of {name} ended with the backend {state}: {reason}");
            return ExitCode::from(RECOVERY_FAILED);
        }
    }
}

fn wall_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// `--admin`, else `[server] admin` of `--config`, else the default serve's socket.
fn admin_path(args: &AdminArgs) -> Result<PathBuf, String> {
    if let Some(p) = &args.admin {
        return Ok(p.clone());
    }
    if let Some(file) = &args.config {
        return Config::load(file).map(|c| c.server.admin).map_err(|e| e.to_string());
    }
    Ok(Path::new(DEFAULT_DATA).join(ADMIN_SOCKET))
}

/// `details`: a table per storage.
fn details_table(reply: &AdminReply) -> String {
    let mut out = String::new();
    for s in &reply.storages {
        out.push_str(&format!("storage {}: {}\n", s.name, s.status));
        let mut rows = vec![[
            "BACKEND".to_string(),
            "KIND".to_string(),
            "STATE".to_string(),
            "SINCE".to_string(),
            "LAST TID".to_string(),
            "CONNECTED".to_string(),
            "REASON".to_string(),
        ]];
        for b in &s.backends {
            rows.push([
                b.name.clone(),
                b.label.clone(),
                b.state.clone(),
                b.since.map_or_else(|| "-".to_string(), admin::iso_utc),
                b.last_tid.clone().unwrap_or_else(|| "-".to_string()),
                if b.connected { "yes" } else { "no" }.to_string(),
                b.reason.clone().unwrap_or_else(|| "-".to_string()),
            ]);
        }
        let mut widths = [0usize; 7];
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        for r in &rows {
            let mut line = String::from("  ");
            for (i, (w, c)) in widths.iter().zip(r).enumerate() {
                if i + 1 == r.len() {
                    line.push_str(c);
                } else {
                    line.push_str(&format!("{c:<w$}  "));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        if let Some(b) = &s.broken_invariant {
            out.push_str(&format!("  INTERNAL INVARIANT BROKEN (a zeoraid bug, please report it): {b}\n"));
        }
        if let Some(r) = &s.recovery {
            out.push_str(&format!("  {}, started {}\n", admin::progress_line(r), admin::iso_utc(r.started)));
        }
        if let Some(e) = &s.last_recovery {
            let how = match &e.failure {
                None => "ok".to_string(),
                Some(reason) => format!("failed: {reason}"),
            };
            out.push_str(&format!(
                "  last recovery: {} {how}, at {}, copied {} txn(s) / {}\n",
                e.target,
                admin::iso_utc(e.at),
                e.txns_copied,
                admin::human_bytes(e.bytes_copied as f64)
            ));
        }
    }
    out
}

fn init_logs(level: Option<&str>) -> Result<(), String> {
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).map_err(|e| format!("--log-level {l:?}: {e}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A log line that cannot be written (stderr closed) is dropped: by default the subscriber
        // would report that with eprintln!, which panics on a closed stderr and killed the server.
        .log_internal_errors(false)
        .init();
    Ok(())
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let t0 = Instant::now();
    let mut cfg = match &args.config {
        Some(file) => {
            let mut cfg = Config::load(file).map_err(|e| e.to_string())?;
            if let Some(dir) = &args.data {
                cfg.override_data(dir).map_err(|e| e.to_string())?;
            }
            cfg
        }
        None => {
            let data = args.data.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DATA));
            Config::check_data_dir(&data).map_err(|e| e.to_string())?;
            Config::defaults(&data)
        }
    };
    let source = ReloadSource {
        file: args.config.clone(),
        listen: args.listen.clone(),
        data: if args.config.is_some() { args.data.clone() } else { None },
        server: cfg.server.clone(),
    };
    cfg.override_listen(args.listen).map_err(|e| e.to_string())?;
    let source = ReloadSource { server: cfg.server.clone(), ..source };
    cfg.create_dirs().map_err(|e| format!("cannot create the storage directories: {e}"))?;

    // One thread for all network I/O and the core: the core is one state machine anyway, and
    // a single thread saves the cross-thread wake-ups between connection tasks and the core
    // (measured: loads/s at 16 clients 2.2-2.6x stock ZEO with the multi-thread runtime,
    // 2.5-3.3x with this). Storage I/O runs on the backends' own threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let mut driver = Driver::new(TokioNet);
    driver.set_max_output(cfg.server.max_output);
    let grace = cfg.server.shutdown_grace;

    let failed = runtime.block_on(async {
        let start = tokio::time::Instant::now();
        let started =
            startup::open_storages(&cfg, &driver, start.into_std(), cfg.server.invalidation_queue_size)
                .await?;
        let server_cfg = cfg.server_config(started.seeds);
        let units = started.units;
        let shutdown = shutdown_signal()?;
        let mut listeners = Vec::with_capacity(cfg.server.listen.len());
        let opened = async {
            for addr in &cfg.server.listen {
                listeners.push(driver.net().bind(addr).await.map_err(|e| e.to_string())?);
            }
            let admin_addr = ListenAddr::Unix(cfg.server.admin.clone());
            driver.net().bind(&admin_addr).await.map_err(|e| format!("admin socket: {e}"))
        };
        let admin_listener = match opened.await {
            Ok(l) => l,
            Err(e) => {
                // Nothing was served: close what was opened, keep the state file as it was.
                let _ = startup::close_storages(
                    units
                        .into_iter()
                        .map(|mut u| {
                            u.last_state = None;
                            u
                        })
                        .collect(),
                )
                .await;
                return Err(e);
            }
        };
        for l in &listeners {
            let at = l.local_addr();
            info!("listening on {at}");
            for s in &cfg.storages {
                info!("serving storage {} ({} backend(s)) on {at}", s.name, s.backends.len());
            }
        }
        let admin_task = tokio::spawn(admin::serve(admin_listener, driver.admin_sender(), source));
        info!("ready in {} ms", t0.elapsed().as_millis());
        let units = driver
            .run(
                server_cfg,
                listeners,
                units,
                RealOpener { max_frame: cfg.server.max_frame },
                start,
                shutdown,
                grace,
            )
            .await;
        admin_task.abort();
        let _ = admin_task.await; // drops the listener: the socket file is removed
        Ok::<_, String>(startup::close_storages(units).await)
    })?;
    drop(runtime);
    if !failed.is_empty() {
        return Err(failed.join("; "));
    }
    info!("stopped");
    Ok(())
}

/// Resolves at SIGTERM or SIGINT. The handlers are installed when this is called, so that a
/// signal that arrives before the future is first polled is not lost.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("cannot handle SIGINT: {e}"))?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM received"),
                _ = int.recv() => info!("SIGINT received"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                info!("Ctrl-C received");
            }
        })
    }
}
