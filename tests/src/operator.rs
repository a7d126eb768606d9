//! The manager commands as an operator runs them against a running RAID (`zeoraid status`,
//! `details --json`, `recover`), for the recovery tests.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::server::{zeoraid_binary, ServerProcess};

/// Runs `zeoraid ARGS` against the RAID; it must exit 0; returns its stdout.
pub fn ok(raid: &ServerProcess, args: &[&str]) -> String {
    let out = raid.admin(args).unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "zeoraid {} failed ({})\n{stdout}{}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr),
        raid.log_tail()
    );
    stdout
}

/// `zeoraid status`: its word and exit code.
pub fn status(raid: &ServerProcess) -> (String, Option<i32>) {
    let out = raid.admin(&["status"]).unwrap_or_else(|e| panic!("{e}"));
    (String::from_utf8_lossy(&out.stdout).trim().to_owned(), out.status.code())
}

/// `zeoraid details --json`, parsed.
pub fn details_json(raid: &ServerProcess) -> serde_json::Value {
    let text = ok(raid, &["details", "--json"]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("details --json: {e}\n{text}"))
}

/// `zeoraid recover ARGS --wait` against the RAID, to run.
pub fn recover_wait(raid: &ServerProcess, args: &[&str]) -> Command {
    let mut cmd = Command::new(zeoraid_binary());
    cmd.arg("recover").args(args).arg("--wait").arg("--admin");
    cmd.arg(raid.admin_socket().expect("a RAID has an admin socket"));
    cmd
}

/// The first storage's backend `name` in `details --json`.
pub fn backend(details: &serde_json::Value, name: &str) -> serde_json::Value {
    details["storages"][0]["backends"]
        .as_array()
        .and_then(|bs| bs.iter().find(|b| b["name"] == name))
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// Polls `details --json` (every 100 ms) until `until` returns true for it; panics with `what`
/// and the last details after `limit`.
pub fn wait_details(
    raid: &ServerProcess,
    limit: Duration,
    what: &str,
    until: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let d = details_json(raid);
        if until(&d) {
            return d;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}\n{d:#}\n{}", raid.log_tail());
        std::thread::sleep(Duration::from_millis(100));
    }
}
