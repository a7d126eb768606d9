//! `zeoraid serve` as a whole process: start-up, the handshake, shutdown on SIGTERM, and the
//! start-up errors (bad config, locked storage).
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_zeoraid");
/// Generous: CI machines are shared; `serve` itself is ready in a few milliseconds.
const STARTUP: Duration = Duration::from_secs(10);

/// A running `zeoraid serve`; killed if the test fails before it exits.
struct Served {
    child: Child,
    /// The addresses it logged as "listening on ADDR".
    addrs: Vec<String>,
    /// Every stderr line so far, and the rest as it comes.
    lines: Vec<String>,
    rest: mpsc::Receiver<String>,
    started: Duration,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(cwd: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).current_dir(cwd).env("RUST_LOG", "info").stdin(Stdio::null());
    c
}

/// Starts `zeoraid serve ARGS` in `cwd` and waits until it logs "ready" (or exits).
fn serve(cwd: &Path, args: &[&str], listeners: usize) -> Served {
    let t0 = Instant::now();
    let mut child = command(cwd, &[&["serve"], args].concat())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn zeoraid");
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut s = Served { child, addrs: Vec::new(), lines: Vec::new(), rest: rx, started: Duration::ZERO };
    loop {
        let line = s.rest.recv_timeout(STARTUP.saturating_sub(t0.elapsed())).unwrap_or_else(|_| {
            panic!("no 'ready' line in {STARTUP:?}; stderr so far:\n{}", s.lines.join("\n"))
        });
        if let Some(at) = line.split("listening on ").nth(1) {
            s.addrs.push(at.trim().to_string());
        }
        let ready = line.contains("ready in");
        s.lines.push(line);
        if ready {
            break;
        }
    }
    s.started = t0.elapsed();
    assert_eq!(s.addrs.len(), listeners, "{}", s.lines.join("\n"));
    s
}

impl Served {
    /// Sends SIGTERM and waits for the exit (at most `limit`).
    fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let st = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(st.success());
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                while let Ok(l) = self.rest.recv_timeout(Duration::from_millis(200)) {
                    self.lines.push(l);
                }
                return st;
            }
            assert!(t0.elapsed() < limit, "still running {limit:?} after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Reads one frame (4-byte big-endian length, payload).
fn read_frame(r: &mut impl Read) -> Vec<u8> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).expect("frame length");
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    r.read_exact(&mut buf).expect("frame payload");
    buf
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s
}

#[test]
fn serve_without_config_announces_z5_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = serve(dir.path(), &["--listen", "127.0.0.1:0"], 1);
    eprintln!("zeoraid serve was ready {:?} after spawn", s.started);
    assert!(
        s.lines.iter().any(|l| l.contains("serving storage 1 (2 backend(s)) on 127.0.0.1:")),
        "{:#?}",
        s.lines
    );

    let mut c = connect(&s.addrs[0]);
    assert_eq!(read_frame(&mut c), b"Z5");
    // A second client is served too.
    let mut c2 = connect(&s.addrs[0]);
    assert_eq!(read_frame(&mut c2), b"Z5");

    let status = s.terminate(Duration::from_secs(5));
    assert!(status.success(), "exit status {status}; stderr:\n{}", s.lines.join("\n"));
    for b in ["a", "b"] {
        assert!(dir.path().join("var").join(b).join("Data.fs").is_file(), "Data.fs created under ./var/{b}");
        assert!(dir.path().join("var").join(b).join("blobs").is_dir(), "blobs created under ./var/{b}");
    }
    assert!(dir.path().join("var/1.raid-state").is_file(), "the RAID state is saved");
    assert!(!dir.path().join("var/admin.sock").exists(), "the admin socket is removed at exit");
    // The clients were disconnected by the shutdown.
    let mut rest = Vec::new();
    assert_eq!(c.read_to_end(&mut rest).expect("eof"), 0);
}

#[test]
fn serve_listens_on_a_unix_socket_and_removes_it_at_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("zeo.sock");
    let listen = format!("unix:{}", sock.display());
    let data = dir.path().join("data");
    let mut s = serve(dir.path(), &["--listen", &listen, "--data", data.to_str().expect("utf-8")], 1);
    assert_eq!(s.addrs[0], listen);
    let mut c = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    assert_eq!(read_frame(&mut c), b"Z5");
    let status = s.terminate(Duration::from_secs(5));
    assert!(status.success(), "{}", s.lines.join("\n"));
    assert!(!sock.exists(), "socket file removed at exit");
    assert!(data.join("a/Data.fs").is_file() && data.join("b/Data.fs").is_file());
}

#[test]
fn msgpack_encoding_is_announced_as_m5() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("zeoraid.toml"),
        "[server]\nlisten = [\"127.0.0.1:0\"]\nencoding = \"msgpack\"\nshutdown_grace = 1\n\n\
         [[storage]]\nname = \"main\"\npath = \"db/Data.fs\"\n",
    )
    .expect("write config");
    let mut s = serve(dir.path(), &["--config", "zeoraid.toml"], 1);
    let mut c = connect(&s.addrs[0]);
    assert_eq!(read_frame(&mut c), b"M5");
    assert!(s.terminate(Duration::from_secs(5)).success());
    assert!(dir.path().join("db/Data.fs").is_file());
}

#[test]
fn ruok_probe_answers_json_keyed_by_storage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = serve(dir.path(), &["--listen", "127.0.0.1:0"], 1);
    let mut c = connect(&s.addrs[0]);
    // The probe may be sent without waiting for the server's frame.
    c.write_all(b"\x00\x00\x00\x04ruok").expect("send ruok");
    let first = read_frame(&mut c);
    let json = if first == b"Z5" { read_frame(&mut c) } else { first };
    let v: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
    let st = v.get("1").expect("keyed by storage name \"1\"");
    assert!(st.get("connections").is_some(), "{v}");
    assert!(st.get("last-transaction").is_some(), "{v}");
    assert!(s.terminate(Duration::from_secs(5)).success());
}

#[test]
fn bad_config_exits_1_naming_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[server]\nlisten = [\"127.0.0.1:8100\"]\nmax_frames = 4\n[[storage]]\nname = \"1\"\npath = \"a.fs\"\n")
        .expect("write");
    for args in [vec!["serve", "--config", "bad.toml"], vec!["check-config", "bad.toml"]] {
        let out = command(dir.path(), &args).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("bad.toml:3:1: server.max_frames: unknown field"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    let out = command(dir.path(), &["serve", "--listen", "nowhere"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a listen address"));
    assert!(!dir.path().join("var").exists(), "nothing created on a usage error");

    std::fs::write(&file, "[[storage]]\nname = \"1\"\npath = \"a.fs\"\n").expect("write");
    let out = command(dir.path(), &["check-config", "bad.toml"]).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("storage \"1\""));
}

#[test]
fn second_server_on_the_same_data_exits_1_with_locked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = serve(dir.path(), &["--listen", "127.0.0.1:0"], 1);
    let out = command(dir.path(), &["serve", "--listen", "127.0.0.1:0"]).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("zeoraid: storage 1 backend a (var/a/Data.fs): ") && last.contains("locked"),
        "{err}"
    );
    // The first one is undisturbed.
    let mut c = connect(&first.addrs[0]);
    assert_eq!(read_frame(&mut c), b"Z5");
    assert!(first.terminate(Duration::from_secs(5)).success());
}

#[test]
fn port_in_use_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = command(dir.path(), &["serve", "--listen", &addr]).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.lines().last().unwrap_or_default().contains(&format!("cannot listen on {addr}")), "{err}");
}

#[test]
fn version_is_printed() {
    let out = Command::new(BIN).arg("--version").output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("zeoraid "));
}

/// A client that sends requests but never reads the replies is closed once `max_output` bytes
/// wait for it; the server's memory stays bounded and other clients are served meanwhile.
#[test]
fn a_client_that_does_not_read_is_closed_and_others_go_on() {
    use zeoraid_core::ids::{Oid, Tid};
    use zeoraid_core::wire::codec::Codec;
    use zeoraid_core::wire::message::{ClientMessage, MsgId};
    use zeoraid_core::wire::request::Request;
    use zeoraid_core::wire::value::Text;
    use zeoraid_core::wire::Encoding;

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("zeoraid.toml"),
        "[server]\nlisten = [\"127.0.0.1:0\"]\nmax_output = 65536\nshutdown_grace = 1\n\n\
         [[storage]]\nname = \"1\"\npath = \"db/Data.fs\"\n",
    )
    .expect("write config");
    let mut s = serve(dir.path(), &["--config", "zeoraid.toml"], 1);
    let mut c = connect(&s.addrs[0]);
    assert_eq!(read_frame(&mut c), b"Z5");
    let codec = Codec::new(Encoding::Pickle);
    let frame = |msg: &ClientMessage| {
        let mut body = Vec::new();
        codec.encode_client(msg, &mut body).expect("encode");
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&body);
        f
    };
    let mut first = b"\x00\x00\x00\x02Z5".to_vec();
    first.extend(frame(&ClientMessage::Call {
        msgid: MsgId::int(1),
        request: Request::Register { storage: Text::from_static("1"), read_only: false },
    }));
    c.write_all(&first).expect("handshake and register");
    // 200,000 loads of the (missing) root: each answered with a POSKeyError nobody reads.
    let load = frame(&ClientMessage::Call {
        msgid: MsgId::int(2),
        request: Request::LoadBefore { oid: Oid::ROOT, before: Tid::MAX },
    });
    let burst: Vec<u8> = load.iter().copied().cycle().take(load.len() * 10_000).collect();
    let writer = std::thread::spawn(move || {
        for _ in 0..20 {
            if c.write_all(&burst).is_err() {
                return true; // closed by the server
            }
        }
        // Everything sent; the server closes it once the replies pile up.
        let mut sink = [0u8; 1];
        c.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        std::thread::sleep(Duration::from_secs(2));
        let _ = c.read(&mut sink);
        true
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line =
            s.rest.recv_timeout(deadline.saturating_duration_since(Instant::now())).unwrap_or_else(|_| {
                panic!("no close of the non-reading client; stderr:\n{}", s.lines.join("\n"))
            });
        let hit = line.contains("does not read its replies");
        s.lines.push(line);
        if hit {
            break;
        }
    }
    // Another client is served normally.
    let mut d = connect(&s.addrs[0]);
    d.write_all(b"\x00\x00\x00\x04ruok").expect("send ruok");
    let first = read_frame(&mut d);
    let json = if first == b"Z5" { read_frame(&mut d) } else { first };
    assert!(serde_json::from_slice::<serde_json::Value>(&json).expect("JSON").get("1").is_some());
    assert!(writer.join().expect("writer thread"));
    assert!(s.terminate(Duration::from_secs(10)).success());
}
