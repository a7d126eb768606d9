//! Command-line arguments of `zeoraid-load`.

use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// A ZEO load generator: N clients, one TCP (or Unix) connection each, speaking ZEO 5 to any
/// server (zeoraid or stock `runzeo`), measuring throughput and latency.
#[derive(Debug, Clone, Parser)]
#[command(name = "zeoraid-load", version)]
pub(crate) struct Args {
    /// The server: `HOST:PORT` or `unix:PATH`.
    #[arg(long, value_parser = parse_address)]
    pub(crate) address: Address,

    /// Workloads to run, comma-separated; each runs once per client count.
    #[arg(long, value_delimiter = ',', default_value = "commits")]
    pub(crate) workload: Vec<Workload>,

    /// Concurrent clients, comma-separated for several runs (e.g. `1,4,16`).
    #[arg(long, value_delimiter = ',', default_value = "1", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) clients: Vec<u32>,

    /// Seconds measured per run (after the warm-up).
    #[arg(long, default_value = "5", value_parser = parse_seconds)]
    pub(crate) duration: Duration,

    /// Seconds of load before measuring starts.
    #[arg(long, default_value = "1", value_parser = parse_seconds_or_zero)]
    pub(crate) warmup: Duration,

    /// `commits`: objects stored per transaction.
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) objects: u32,

    /// Bytes per data record (a persistent pickle padded to this size; at least its ~85 bytes
    /// of framing).
    #[arg(long, default_value = "100", value_parser = clap::value_parser!(u32).range(0..=(64 << 20)))]
    pub(crate) size: u32,

    /// `loads`: objects created (once, by one set-up connection) and read at random.
    #[arg(long, default_value = "10000", value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
    pub(crate) dataset: u32,

    /// `loads`: loads each client keeps in flight.
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) depth: u32,

    /// The storage name to register with.
    #[arg(long, default_value = "1")]
    pub(crate) storage: String,

    /// Seed of the oid choice and the payloads (default: from the clock; always printed).
    #[arg(long)]
    pub(crate) seed: Option<u64>,

    /// Worker threads of the generator's runtime.
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub(crate) threads: u32,

    /// Also report the CPU use of this process id (the server) during each measurement.
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,

    /// Seconds to wait for each connection and each set-up reply.
    #[arg(long, default_value = "10", value_parser = parse_seconds)]
    pub(crate) timeout: Duration,

    /// One JSON object per run on stdout instead of the table.
    #[arg(long)]
    pub(crate) json: bool,

    /// Exit non-zero if any run counted an error.
    #[arg(long)]
    pub(crate) strict: bool,
}

/// What each client does in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Workload {
    /// Transactions updating the client's own objects: tpc_begin, storea×K, vote, tpc_finish.
    Commits,
    /// `loadBefore(oid, maxtid)` of uniformly random oids of a shared data set.
    Loads,
}

impl Workload {
    /// The name used in the output.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::Commits => "commits",
            Workload::Loads => "loads",
        }
    }
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Address {
    /// `HOST:PORT` (host resolved at connect time; `[v6]:port` works too).
    Tcp(String),
    /// `unix:PATH`.
    Unix(PathBuf),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp(a) => f.write_str(a),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

fn parse_address(s: &str) -> Result<Address, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("unix: needs a socket path".into());
        }
        return Ok(Address::Unix(PathBuf::from(path)));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?} is neither HOST:PORT nor unix:PATH"));
    };
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    port.parse::<u16>().map_err(|_| format!("{port:?} is not a port number"))?;
    Ok(Address::Tcp(s.to_owned()))
}

fn parse_seconds_or_zero(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a usable number of seconds"))
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let d = parse_seconds_or_zero(s)?;
    if d.is_zero() {
        return Err("must be more than 0 seconds".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("zeoraid-load").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let a = parse(&["--address", "127.0.0.1:8100"]).expect("parses");
        assert_eq!(a.address, Address::Tcp("127.0.0.1:8100".into()));
        assert_eq!(a.workload, [Workload::Commits]);
        assert_eq!(a.clients, [1]);
        assert_eq!(a.duration, Duration::from_secs(5));
        assert_eq!(a.warmup, Duration::from_secs(1));
        assert_eq!((a.objects, a.size, a.dataset, a.depth, a.threads), (1, 100, 10_000, 1, 1));
        assert_eq!(a.storage, "1");
        assert_eq!(a.seed, None);
        assert!(!a.json && !a.strict);
    }

    #[test]
    fn lists_and_values() {
        let a = parse(&[
            "--address=unix:/tmp/zeo.sock",
            "--workload",
            "loads,commits",
            "--clients",
            "1,4,16",
            "--duration",
            "0.5",
            "--warmup",
            "0",
            "--depth",
            "8",
            "--seed",
            "42",
            "--json",
            "--strict",
        ])
        .expect("parses");
        assert_eq!(a.address, Address::Unix("/tmp/zeo.sock".into()));
        assert_eq!(a.address.to_string(), "unix:/tmp/zeo.sock");
        assert_eq!(a.workload, [Workload::Loads, Workload::Commits]);
        assert_eq!(a.clients, [1, 4, 16]);
        assert_eq!(a.duration, Duration::from_millis(500));
        assert_eq!(a.warmup, Duration::ZERO);
        assert_eq!((a.depth, a.seed), (8, Some(42)));
        assert!(a.json && a.strict);
    }

    #[test]
    fn bad_input_is_refused() {
        for bad in [
            &["--address", "localhost"][..],
            &["--address", "localhost:http"],
            &["--address", ":8100"],
            &["--address", "h:70000"],
            &["--address", "unix:"],
            &[],
            &["--address", "h:1", "--clients", "0"],
            &["--address", "h:1", "--clients", "1,,4"],
            &["--address", "h:1", "--workload", "mixed"],
            &["--address", "h:1", "--duration", "0"],
            &["--address", "h:1", "--duration", "-1"],
            &["--address", "h:1", "--duration", "nan"],
            &["--address", "h:1", "--warmup", "inf"],
            &["--address", "h:1", "--depth", "0"],
            &["--address", "h:1", "--objects", "0"],
            &["--address", "h:1", "--threads", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ipv6_addresses_keep_their_brackets() {
        let a = parse(&["--address", "[::1]:8100"]).expect("parses");
        assert_eq!(a.address, Address::Tcp("[::1]:8100".into()));
    }
}
