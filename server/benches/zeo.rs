//! zeoraid against stock ZEO 6.2 `runzeo`, same machine, same run, same load generator.
//!
//! ```text
//! cargo bench -p zeoraid-server --bench zeo [-- [--seconds 5] [--warmup 1] [--clients 1,4,16]
//!                                              [--workloads commits,loads] [--threads 1]
//!                                              [--dataset 10000] [--keep DIR]]
//! ```
//!
//! Cargo builds `zeoraid` and `zeoraid-load` in release mode for this benchmark. It then:
//! 1. starts stock `runzeo` (the pinned venv of `zeoraid_tests::python::PythonEnv`) with a
//!    FileStorage in a temporary directory on a free loopback port, waits for the port, runs
//!    `zeoraid-load --json` for every workload × client count (S seconds each after W seconds
//!    of warm-up; the server's CPU use is measured too), and stops it;
//! 2. does the same with `zeoraid serve --listen 127.0.0.1:PORT --data DIR`, if that serves:
//!    a `zeoraid` that exits instead of listening is reported as "not available";
//! 3. prints a markdown table: ops/s, p50 and p99 latency, errors, CPU of generator and server,
//!    and the ratio zeoraid/stock of ops/s and of p99.
//!
//! Stock FileStorage fsyncs at every commit; zeoraid must be compared with fsync on too.
//! This is a benchmark, not a test: nothing here asserts a figure. It is `harness = false`;
//! `cargo bench` passes `--bench`, which is ignored.

mod common;

use common::{cell, num, run_load, Res, ZEORAID};
use serde_json::Value as Json;
use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use zeoraid_tests::python::PythonEnv;

#[derive(Debug, Clone)]
struct Args {
    seconds: String,
    warmup: String,
    clients: String,
    workloads: String,
    threads: String,
    dataset: String,
    keep: Option<PathBuf>,
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        seconds: "5".into(),
        warmup: "1".into(),
        clients: "1,4,16".into(),
        workloads: "commits,loads".into(),
        threads: "1".into(),
        dataset: "10000".into(),
        keep: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => {}
            "--seconds" => a.seconds = value()?,
            "--warmup" => a.warmup = value()?,
            "--clients" => a.clients = value()?,
            "--workloads" => a.workloads = value()?,
            "--threads" => a.threads = value()?,
            "--dataset" => a.dataset = value()?,
            "--keep" => a.keep = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    Ok(a)
}

fn free_port() -> Res<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until `port` accepts connections; `Ok(false)` if the server exited first.
fn wait_for_port(server: &mut Child, port: u16, limit: Duration) -> Res<bool> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    loop {
        if server.try_wait()?.is_some() {
            return Ok(false);
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(true);
        }
        if start.elapsed() > limit {
            return Err(format!("nothing listens on port {port} after {limit:?}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM (through `kill`, to let the server shut down cleanly), then SIGKILL after 5 s.
fn stop(mut server: Child) -> Res<()> {
    let _ = Command::new("kill").arg("-TERM").arg(server.id().to_string()).status();
    let start = Instant::now();
    while server.try_wait()?.is_none() {
        if start.elapsed() > Duration::from_secs(5) {
            server.kill()?;
            server.wait()?;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Runs the generator against `port`; returns its JSON lines.
fn load(args: &Args, port: u16, server_pid: u32) -> Res<Vec<Json>> {
    run_load(
        &format!("127.0.0.1:{port}"),
        Some(server_pid),
        &[
            "--workload",
            &args.workloads,
            "--clients",
            &args.clients,
            "--duration",
            &args.seconds,
            "--warmup",
            &args.warmup,
            "--threads",
            &args.threads,
            "--dataset",
            &args.dataset,
        ],
    )
}

fn log_file(dir: &Path, name: &str) -> Res<(fs::File, fs::File)> {
    let f = fs::File::create(dir.join(name))?;
    Ok((f.try_clone()?, f))
}

fn stock(args: &Args, env: &PythonEnv, dir: &Path) -> Res<Vec<Json>> {
    fs::create_dir_all(dir)?;
    let port = free_port()?;
    let conf = dir.join("zeo.conf");
    fs::write(
        &conf,
        format!(
            "<zeo>\n  address 127.0.0.1:{port}\n</zeo>\n<filestorage 1>\n  path {}\n</filestorage>\n",
            dir.join("Data.fs").display()
        ),
    )?;
    let (out, err) = log_file(dir, "runzeo.log")?;
    let mut server =
        env.command().args(["-m", "ZEO.runzeo", "-C"]).arg(&conf).stdout(out).stderr(err).spawn()?;
    if !wait_for_port(&mut server, port, Duration::from_secs(60))? {
        let log = fs::read_to_string(dir.join("runzeo.log")).unwrap_or_default();
        return Err(format!("runzeo exited before listening:\n{log}").into());
    }
    let pid = server.id();
    let result = load(args, port, pid);
    stop(server)?;
    result
}

/// `Ok(Err(why))` when `zeoraid serve` exits instead of serving.
fn zeoraid(args: &Args, dir: &Path) -> Res<Result<Vec<Json>, String>> {
    let data = dir.join("data");
    fs::create_dir_all(&data)?;
    let port = free_port()?;
    let (out, err) = log_file(dir, "zeoraid.log")?;
    let mut server = Command::new(ZEORAID)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(&data)
        .stdout(out)
        .stderr(err)
        .spawn()?;
    if !wait_for_port(&mut server, port, Duration::from_secs(60))? {
        let status = server.wait()?;
        let log = fs::read_to_string(dir.join("zeoraid.log")).unwrap_or_default();
        let first = log.lines().next().unwrap_or("").trim().to_owned();
        return Ok(Err(format!("`zeoraid serve` exited ({status}) without listening: {first}")));
    }
    let pid = server.id();
    let result = load(args, port, pid);
    stop(server)?;
    Ok(Ok(result?))
}

fn table(stock: &[Json], zeoraid: &Result<Vec<Json>, String>) -> String {
    let mut t = String::from(
        "| server | workload | clients | ops/s | p50 µs | p99 µs | errors | gen cpu | server cpu | ops/s zeoraid/stock | p99 zeoraid/stock |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let key = |j: &Json| (j.get("workload").and_then(Json::as_str).map(str::to_owned), num(j, "clients"));
    let row = |t: &mut String, server: &str, j: &Json, ratio: (Option<f64>, Option<f64>)| {
        let _ = writeln!(
            t,
            "| {server} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            j.get("workload").and_then(Json::as_str).unwrap_or("?"),
            cell(num(j, "clients"), 0),
            cell(num(j, "ops_per_s"), 0),
            cell(num(j, "p50_us"), 0),
            cell(num(j, "p99_us"), 0),
            cell(num(j, "errors"), 0),
            cell(num(j, "gen_cpu"), 2),
            cell(num(j, "server_cpu"), 2),
            ratio.0.map_or_else(|| "".into(), |r| format!("{r:.2}×")),
            ratio.1.map_or_else(|| "".into(), |r| format!("{r:.2}×")),
        );
    };
    for s in stock {
        row(&mut t, "stock ZEO 6.2", s, (None, None));
        if let Ok(z) = zeoraid {
            if let Some(z) = z.iter().find(|z| key(z) == key(s)) {
                let ratio = |k: &str| match (num(z, k), num(s, k)) {
                    (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                    _ => None,
                };
                row(&mut t, "zeoraid", z, (ratio("ops_per_s"), ratio("p99_us")));
            }
        }
    }
    if let Err(why) = zeoraid {
        let _ = writeln!(t, "\nzeoraid: not available ({why})");
    }
    t
}

fn main() -> Res<()> {
    let args = parse_args()?;
    let env = PythonEnv::try_get().map_err(|e| e.to_string())?;
    let tmp = tempfile::tempdir()?;
    let base = args.keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    eprintln!("zeo bench: stock runzeo (FileStorage) in {}", base.join("stock").display());
    let stock = stock(&args, env, &base.join("stock"))?;
    eprintln!("zeo bench: zeoraid in {}", base.join("zeoraid").display());
    let zeoraid = zeoraid(&args, &base.join("zeoraid"))?;
    println!(
        "\n{} s per point after {} s warm-up, seed {}, generator threads {}; {}\n",
        args.seconds,
        args.warmup,
        common::SEED,
        args.threads,
        common::machine(),
    );
    print!("{}", table(&stock, &zeoraid));
    Ok(())
}
