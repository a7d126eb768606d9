//! Helpers shared by the process-level benchmarks (`zeo`, `raid`, `recovery`): running
//! `zeoraid-load`, reading its JSON lines, formatting table cells, and describing the machine.
//!
//! Each bench is its own crate and uses a subset of these, hence the `dead_code` allowance.
#![allow(dead_code)]

use serde_json::Value as Json;
use std::error::Error;
use std::process::{Command, Stdio};

/// The benches' result type (`main` prints the error).
pub(crate) type Res<T> = Result<T, Box<dyn Error>>;

/// The load generator, built by cargo in the bench's profile.
pub(crate) const LOADGEN: &str = env!("CARGO_BIN_EXE_zeoraid-load");
/// The server binary, built by cargo in the bench's profile.
pub(crate) const ZEORAID: &str = env!("CARGO_BIN_EXE_zeoraid");
/// The seed every bench gives the generator (payloads and oid choices repeat from run to run).
pub(crate) const SEED: &str = "20261125";

/// Runs `zeoraid-load --address ADDRESS --seed SEED --json [--server-pid PID] ARGS...` and
/// returns its JSON lines (one per workload × client count). A failing generator is an error.
pub(crate) fn run_load(address: &str, server_pid: Option<u32>, args: &[&str]) -> Res<Vec<Json>> {
    let mut cmd = Command::new(LOADGEN);
    cmd.args(["--address", address, "--seed", SEED, "--json"]).args(args);
    if let Some(pid) = server_pid {
        cmd.args(["--server-pid", &pid.to_string()]);
    }
    let out = cmd.stderr(Stdio::inherit()).output()?;
    if !out.status.success() {
        return Err(
            format!("zeoraid-load {} against {address} failed ({})", args.join(" "), out.status).into()
        );
    }
    let text = String::from_utf8(out.stdout)?;
    text.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}

/// A number in a generator's JSON line.
pub(crate) fn num(j: &Json, key: &str) -> Option<f64> {
    j.get(key).and_then(Json::as_f64)
}

/// A table cell: the value with `decimals` decimals, or `-`.
pub(crate) fn cell(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

/// `a / b` as `1.23×`, or `-`.
pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "-".into(),
    }
}

/// "machine: N CPUs, load average A B C": the machine may be shared, and its load says how far
/// to trust the figures.
pub(crate) fn machine() -> String {
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "machine: {} CPUs, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

/// User + system CPU seconds used so far by `pid`, from Linux's `/proc/PID/stat` (`USER_HZ`
/// is 100 on every Linux architecture); `None` elsewhere or when the process is gone.
pub(crate) fn cpu_secs(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after the last `)`.
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Per thread of `pid` (Linux): its name, user + system CPU seconds and context switches
/// (voluntary + involuntary) so far, from `/proc/PID/task/*`. Empty elsewhere.
pub(crate) fn thread_stats(pid: u32) -> Vec<(String, f64, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default().trim().to_string();
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let mut fields = rest.split_whitespace().skip(11);
        let ticks: u64 = fields.by_ref().take(2).filter_map(|f| f.parse::<u64>().ok()).sum();
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let switches: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        out.push((name, ticks as f64 / 100.0, switches));
    }
    out
}

/// `after - before` of [`thread_stats`], summed by thread name (numbered threads such as
/// `zr-1a-read0`, `zr-1a-read1` kept apart), busiest first; threads that did nothing left out.
pub(crate) fn thread_delta(
    before: &[(String, f64, u64)],
    after: &[(String, f64, u64)],
) -> Vec<(String, f64, u64)> {
    let mut by_name: Vec<(String, f64, u64)> = Vec::new();
    let mut add = |name: &str, cpu: f64, sw: i64| {
        if let Some(e) = by_name.iter_mut().find(|e| e.0 == name) {
            e.1 += cpu;
            e.2 = (e.2 as i64 + sw).max(0) as u64;
        } else {
            by_name.push((name.to_string(), cpu, sw.max(0) as u64));
        }
    };
    for (name, cpu, sw) in after {
        add(name, *cpu, *sw as i64);
    }
    for (name, cpu, sw) in before {
        add(name, -cpu, -(*sw as i64));
    }
    by_name.retain(|e| e.1 > 0.0 || e.2 > 0);
    by_name.sort_by(|a, b| b.1.total_cmp(&a.1));
    by_name
}
