//! Loopback ports for the server processes, and how a start tells that its own child (not
//! another server that took the port first) listens on one.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::Mutex;

use crate::server::{io_error, ServerError};

/// A loopback port that was free a moment ago and that this test process has not handed out
/// before: the kernel may give a port closed a moment ago to the next `bind(0)`, while the
/// server it was meant for (a Python runzeo takes half a second to bind) has not bound it yet.
pub(crate) fn free_port() -> Result<SocketAddr, ServerError> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io_error("binding 127.0.0.1:0"))?;
        let address = listener.local_addr().map_err(io_error("asking for the bound port"))?;
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if handed_out.insert(address.port()) {
            return Ok(address);
        }
    }
}

/// A `RUST_LOG` of the developer's (say `warn`) must not hide the line that readiness waits for.
pub(crate) fn keep_listening_line(cmd: &mut Command) {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        cmd.env("RUST_LOG", format!("{filter},zeoraid=info"));
    }
}

/// Whether `log` has the line a server writes once it has bound `port`: runzeo's
/// `listening on ('127.0.0.1', 4711)`, zeoraid's `listening on 127.0.0.1:4711`.
pub(crate) fn says_listening_on(log: &str, port: u16) -> bool {
    let with_comma = format!(", {port})");
    let with_colon = format!(":{port}");
    log.lines().any(|l| {
        l.split_once("listening on ").is_some_and(|(_, at)| {
            at.trim_end().ends_with(&with_comma) || at.trim_end().ends_with(&with_colon)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_names_our_port_exactly() {
        let runzeo = "2026-11-26T08:53:33 INFO ZEO.asyncio.server listening on ('127.0.0.1', 38635)\n";
        let zeoraid = "2026-11-26T08:53:33.8Z  INFO zeoraid: listening on 127.0.0.1:38635\n";
        for log in [runzeo, zeoraid] {
            assert!(says_listening_on(log, 38635), "{log}");
            assert!(!says_listening_on(log, 8635), "{log}");
            assert!(!says_listening_on(log, 38636), "{log}");
        }
        assert!(!says_listening_on("error while attempting to bind on ('127.0.0.1', 38635)", 38635));
    }

    #[test]
    fn free_ports_are_never_handed_out_twice() {
        let mut seen = BTreeSet::new();
        for _ in 0..300 {
            let port = free_port().expect("a free port").port();
            assert!(seen.insert(port), "port {port} handed out twice");
        }
    }
}
