//! Latency samples, percentiles, error counts and the report of one run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Latency samples of one client or one run, in nanoseconds. Every sample is kept (8 bytes
/// each), so percentiles are exact.
#[derive(Debug, Default, Clone)]
pub(crate) struct Samples {
    nanos: Vec<u64>,
}

impl Samples {
    /// Records one latency.
    pub(crate) fn record(&mut self, latency: Duration) {
        self.nanos.push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Adds another set's samples to this one.
    pub(crate) fn merge(&mut self, other: Samples) {
        self.nanos.extend(other.nanos);
    }

    /// How many samples.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.nanos.len()
    }

    /// Sorts the samples and computes the summary.
    pub(crate) fn summarize(mut self) -> Summary {
        self.nanos.sort_unstable();
        let s = &self.nanos;
        Summary {
            p50: percentile(s, 50.0),
            p90: percentile(s, 90.0),
            p99: percentile(s, 99.0),
            max: s.last().copied(),
        }
    }
}

/// The nearest-rank percentile of sorted samples: the smallest sample such that at least `p`
/// percent of the samples are at or below it. `None` for no samples.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    // rank = ceil(p/100 * n), at least 1; computed in integers where p is a whole hundredth.
    let hundredths = (p.clamp(0.0, 100.0) * 100.0).round() as u128;
    let rank = ((hundredths * n as u128).div_ceil(10_000)).max(1) as usize;
    sorted.get(rank.min(n) - 1).copied()
}

/// Latency percentiles of one run, in nanoseconds (`None` when nothing was measured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Summary {
    pub(crate) p50: Option<u64>,
    pub(crate) p90: Option<u64>,
    pub(crate) p99: Option<u64>,
    pub(crate) max: Option<u64>,
}

/// Errors by kind: the server's error class (`ConflictError`), `disconnect`, `protocol`, …
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ErrorCounts(BTreeMap<String, u64>);

impl ErrorCounts {
    /// Counts one error of `kind`.
    pub(crate) fn add(&mut self, kind: &str) {
        *self.0.entry(kind.to_owned()).or_default() += 1;
    }

    /// Adds another set of counts.
    pub(crate) fn merge(&mut self, other: ErrorCounts) {
        for (k, n) in other.0 {
            *self.0.entry(k).or_default() += n;
        }
    }

    /// All errors.
    pub(crate) fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// `kind=n,kind=n`, or `-` when there are none.
    fn describe(&self) -> String {
        if self.0.is_empty() {
            return "-".into();
        }
        self.0.iter().map(|(k, n)| format!("{k}={n}")).collect::<Vec<_>>().join(",")
    }
}

/// Everything printed about one run.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub(crate) address: String,
    pub(crate) workload: &'static str,
    pub(crate) clients: u32,
    pub(crate) depth: u32,
    pub(crate) objects: u32,
    pub(crate) record_bytes: usize,
    pub(crate) ops: u64,
    pub(crate) seconds: f64,
    pub(crate) latency: Summary,
    pub(crate) errors: ErrorCounts,
    /// CPU used by this process during the measurement, in cores (1.0 = one core busy).
    pub(crate) gen_cpu: Option<f64>,
    /// CPU used by `--server-pid` during the measurement, in cores.
    pub(crate) server_cpu: Option<f64>,
    pub(crate) seed: u64,
}

fn micros(n: Option<u64>) -> Option<f64> {
    // Rounded to 0.1 µs.
    n.map(|n| (n as f64 / 100.0).round() / 10.0)
}

impl Report {
    /// Operations per second.
    pub(crate) fn ops_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ops as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The table header matching [`Report::table_row`].
    pub(crate) fn table_header() -> String {
        format!(
            "{:<8} {:>7} {:>5} {:>9} {:>6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>6} {:>6} errors",
            "workload",
            "clients",
            "depth",
            "ops",
            "secs",
            "ops/s",
            "p50_us",
            "p90_us",
            "p99_us",
            "max_us",
            "gencpu",
            "srvcpu"
        )
    }

    /// One human-readable line.
    pub(crate) fn table_row(&self) -> String {
        let us = |n: Option<u64>| micros(n).map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        let cpu = |c: Option<f64>| c.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
        format!(
            "{:<8} {:>7} {:>5} {:>9} {:>6.2} {:>10.1} {:>9} {:>9} {:>9} {:>9} {:>6} {:>6} {}",
            self.workload,
            self.clients,
            self.depth,
            self.ops,
            self.seconds,
            self.ops_per_sec(),
            us(self.latency.p50),
            us(self.latency.p90),
            us(self.latency.p99),
            us(self.latency.max),
            cpu(self.gen_cpu),
            cpu(self.server_cpu),
            self.errors.describe(),
        )
    }

    /// One JSON object (one line). Written by hand: every value is a number, null, or a string
    /// that [`json_str`] escapes.
    pub(crate) fn to_json(&self) -> String {
        let num = |v: Option<f64>| v.map_or_else(|| "null".to_owned(), |v| format!("{v}"));
        let mut kinds = String::from("{");
        for (i, (k, n)) in self.errors.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(kinds, "{sep}{}:{n}", json_str(k));
        }
        kinds.push('}');
        format!(
            "{{\"address\":{},\"workload\":{},\"clients\":{},\"depth\":{},\"objects\":{},\
             \"record_bytes\":{},\"ops\":{},\"seconds\":{},\"ops_per_s\":{},\"p50_us\":{},\
             \"p90_us\":{},\"p99_us\":{},\"max_us\":{},\"errors\":{},\"error_kinds\":{},\
             \"gen_cpu\":{},\"server_cpu\":{},\"seed\":{}}}",
            json_str(&self.address),
            json_str(self.workload),
            self.clients,
            self.depth,
            self.objects,
            self.record_bytes,
            self.ops,
            self.seconds,
            (self.ops_per_sec() * 10.0).round() / 10.0,
            num(micros(self.latency.p50)),
            num(micros(self.latency.p90)),
            num(micros(self.latency.p99)),
            num(micros(self.latency.max)),
            self.errors.total(),
            kinds,
            num(self.gen_cpu.map(|c| (c * 1000.0).round() / 1000.0)),
            num(self.server_cpu.map(|c| (c * 1000.0).round() / 1000.0)),
            self.seed,
        )
    }
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&s, 50.0), Some(50));
        assert_eq!(percentile(&s, 90.0), Some(90));
        assert_eq!(percentile(&s, 99.0), Some(99));
        assert_eq!(percentile(&s, 99.9), Some(100));
        assert_eq!(percentile(&s, 100.0), Some(100));
        assert_eq!(percentile(&s, 0.0), Some(1));
        // Ten samples: p99 is the largest, p50 the fifth.
        let s: Vec<u64> = (1..=10).map(|i| i * 10).collect();
        assert_eq!(percentile(&s, 50.0), Some(50));
        assert_eq!(percentile(&s, 90.0), Some(90));
        assert_eq!(percentile(&s, 99.0), Some(100));
        assert_eq!(percentile(&[7], 50.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
        // Three samples: ceil(0.5 * 3) = 2nd.
        assert_eq!(percentile(&[1, 2, 3], 50.0), Some(2));
    }

    #[test]
    fn summary_sorts_merged_samples() {
        let mut a = Samples::default();
        for ms in [9, 1, 5] {
            a.record(Duration::from_millis(ms));
        }
        let mut b = Samples::default();
        for ms in [3, 7, 2, 8, 4, 6, 10] {
            b.record(Duration::from_millis(ms));
        }
        a.merge(b);
        assert_eq!(a.len(), 10);
        let s = a.summarize();
        assert_eq!(s.p50, Some(5_000_000));
        assert_eq!(s.p90, Some(9_000_000));
        assert_eq!(s.p99, Some(10_000_000));
        assert_eq!(s.max, Some(10_000_000));
        assert_eq!(Samples::default().summarize(), Summary::default());
    }

    fn report() -> Report {
        let mut errors = ErrorCounts::default();
        errors.add("ConflictError");
        errors.add("disconnect");
        errors.add("ConflictError");
        Report {
            address: "127.0.0.1:1".into(),
            workload: "loads",
            clients: 4,
            depth: 2,
            objects: 1,
            record_bytes: 100,
            ops: 1000,
            seconds: 2.0,
            latency: Summary { p50: Some(12_345), p90: Some(20_000), p99: None, max: Some(1_000_000) },
            errors,
            gen_cpu: Some(0.25),
            server_cpu: None,
            seed: 7,
        }
    }

    #[test]
    fn json_line_carries_every_figure() {
        let r = report();
        assert_eq!(r.errors.total(), 3);
        assert_eq!(
            r.to_json(),
            "{\"address\":\"127.0.0.1:1\",\"workload\":\"loads\",\"clients\":4,\"depth\":2,\
             \"objects\":1,\"record_bytes\":100,\"ops\":1000,\"seconds\":2,\"ops_per_s\":500,\
             \"p50_us\":12.3,\"p90_us\":20,\"p99_us\":null,\"max_us\":1000,\"errors\":3,\
             \"error_kinds\":{\"ConflictError\":2,\"disconnect\":1},\"gen_cpu\":0.25,\
             \"server_cpu\":null,\"seed\":7}"
        );
    }

    #[test]
    fn table_row_lines_up_with_the_header() {
        let r = report();
        let row = r.table_row();
        assert!(row.ends_with("ConflictError=2,disconnect=1"), "{row}");
        assert!(row.contains(" 500.0 "), "{row}");
        let header = Report::table_header();
        // Every column of the header ends where the row's column ends (right-aligned).
        let ends = |s: &str| -> Vec<usize> {
            s.char_indices()
                .filter(|&(i, c)| c != ' ' && s[i + c.len_utf8()..].starts_with(' '))
                .map(|(i, _)| i)
                .collect()
        };
        assert_eq!(ends(&header)[1..12], ends(&row)[1..12]);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
