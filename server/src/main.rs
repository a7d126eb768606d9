//! The `zeoraid` command: `serve`, `check-config`.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;
use zeoraid_core::zeo::events::StorageIdx;
use zeoraid_server::backend::local::LocalBackend;
use zeoraid_server::config::{Config, ListenAddr, DEFAULT_DATA};
use zeoraid_server::driver::Driver;
use zeoraid_server::net::{Listener, Net, TokioNet};

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
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Configuration file (TOML); without one, a single storage "1" is served.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen on ADDR (IP:PORT or unix:PATH) instead of the configured addresses; repeatable.
    #[arg(long, value_name = "ADDR")]
    listen: Vec<ListenAddr>,
    /// Data directory of the single storage: DIR/Data.fs and DIR/blobs [default: ./var].
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
    }
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
            let mut cfg = Config::defaults(&data);
            cfg.override_data(&data).map_err(|e| e.to_string())?; // checks that data is usable
            cfg
        }
    };
    cfg.override_listen(args.listen).map_err(|e| e.to_string())?;
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

    let mut backends = Vec::with_capacity(cfg.storages.len());
    let mut seeds = Vec::with_capacity(cfg.storages.len());
    for (i, s) in cfg.storages.iter().enumerate() {
        let what = format!("storage {} ({})", s.name, s.path.display());
        let (backend, report) = LocalBackend::open(&s.name, &s.local_config(), driver.sink(StorageIdx(i)))
            .map_err(|e| format!("{what}: {e}"))?;
        info!(
            "opened {what}: index from {:?}, {} transaction(s) scanned{}",
            report.index,
            report.scanned_transactions,
            if report.dropped_tail.is_some() { ", a torn tail was cut back" } else { "" }
        );
        seeds.push(backend.seed(cfg.server.invalidation_queue_size).map_err(|e| format!("{what}: {e}"))?);
        backends.push(backend);
    }
    let server_cfg = cfg.server_config(seeds);
    let grace = cfg.server.shutdown_grace;

    let backends = runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        let mut listeners = Vec::with_capacity(cfg.server.listen.len());
        for addr in &cfg.server.listen {
            listeners.push(driver.net().bind(addr).await.map_err(|e| e.to_string())?);
        }
        for l in &listeners {
            let at = l.local_addr();
            info!("listening on {at}");
            for s in &cfg.storages {
                info!("serving storage {} ({}) on {at}", s.name, s.path.display());
            }
        }
        info!("ready in {} ms", t0.elapsed().as_millis());
        Ok::<_, String>(driver.run(server_cfg, listeners, backends, shutdown, grace).await)
    })?;
    drop(runtime);

    let mut failed = Vec::new();
    for (b, s) in backends.into_iter().zip(&cfg.storages) {
        if let Err(e) = b.close() {
            warn!("closing storage {}: {e}", s.name);
            failed.push(format!("storage {} ({}): cannot close: {e}", s.name, s.path.display()));
        }
    }
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
