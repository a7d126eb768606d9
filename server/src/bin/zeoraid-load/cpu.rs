//! CPU time of a process, from Linux's `/proc/<pid>/stat` (elsewhere: not available).

use std::time::Duration;

/// Clock ticks per second of `/proc/*/stat` (`USER_HZ`, 100 on every Linux architecture).
const TICKS_PER_SEC: u64 = 100;

/// User plus system CPU time used so far by `pid` (this process when `None`).
pub(crate) fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let ticks = parse_stat(&text)?;
    Some(Duration::from_millis(ticks.saturating_mul(1000 / TICKS_PER_SEC)))
}

/// `utime + stime` (fields 14 and 15) of a `stat` line. The command name (field 2) is in
/// parentheses and may hold spaces and parentheses itself, so fields are counted after the
/// last `)`.
fn parse_stat(text: &str) -> Option<u64> {
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_user_and_system_ticks() {
        let line = "4242 (python3 (x) y) S 1 4242 4242 0 -1 4194304 2969 0 0 0 150 27 0 0 20 0 2 0 \
                    1234 20000000 3000 18446744073709551615 1 1 0 0 0 0 0 16781312 2 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat(line), Some(177));
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_has_a_cpu_time() {
        assert!(cpu_time(None).is_some());
        assert!(cpu_time(Some(u32::MAX)).is_none());
    }
}
