//! The manager commands against a running `zeoraid serve` (whole processes): `status`,
//! `details`, `disable`, `reload`, and the start-up refusal on a corrupt RAID state file.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_zeoraid");
const STARTUP: Duration = Duration::from_secs(10);

/// A running `zeoraid serve`, killed when dropped.
struct Served {
    child: Child,
    lines: Vec<String>,
    /// The rest of its stderr (kept open: the server's logs must not hit a closed pipe).
    rest: mpsc::Receiver<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) {
        let st = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(st.success());
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                self.lines.extend(self.rest.try_iter());
                assert!(st.success(), "exit {st}; log:\n{}", self.lines.join("\n"));
                return;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "still running after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn zeoraid(cwd: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).current_dir(cwd).env("RUST_LOG", "info").stdin(Stdio::null());
    c
}

/// Starts `zeoraid serve --listen 127.0.0.1:0 ARGS` in `cwd`, waits for "ready".
fn serve(cwd: &Path, args: &[&str]) -> Served {
    let mut child = zeoraid(cwd, &[&["serve", "--listen", "127.0.0.1:0"], args].concat())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut s = Served { child, lines: Vec::new(), rest: rx };
    let t0 = Instant::now();
    loop {
        let line = s
            .rest
            .recv_timeout(STARTUP.saturating_sub(t0.elapsed()))
            .unwrap_or_else(|_| panic!("not ready; log:\n{}", s.lines.join("\n")));
        let ready = line.contains("ready in");
        s.lines.push(line);
        if ready {
            // The admin endpoint is bound before "ready".
            return s;
        }
    }
}

/// Runs a manager command in `cwd`.
fn run(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let Output { status, stdout, stderr } = zeoraid(cwd, args).output().expect("run");
    let code = status.code().expect("exited");
    (code, String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

/// The state word of `backend` in a `details` table (found under the STATE header, since
/// the KIND column has spaces).
fn state_of(details: &str, backend: &str) -> Option<String> {
    let header = details.lines().find(|l| l.trim_start().starts_with("BACKEND"))?;
    let col = header.find("STATE")?;
    let row = details.lines().find(|l| l.split_whitespace().next() == Some(backend))?;
    row.get(col..)?.split_whitespace().next().map(str::to_string)
}

const TWO: &str =
    "[[storage]]\nname = \"1\"\n\n  [[storage.backend]]\n  name = \"a\"\n  path = \"var/a/Data.fs\"\n\n  \
                   [[storage.backend]]\n  name = \"b\"\n  path = \"var/b/Data.fs\"\n";
const C: &str = "\n  [[storage.backend]]\n  name = \"c\"\n  path = \"var/c/Data.fs\"\n";

#[test]
fn default_serve_is_an_optimal_raid_of_a_and_b() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = serve(dir.path(), &[]);
    let (code, out, err) = run(dir.path(), &["status"]);
    assert_eq!((code, out.as_str()), (0, "optimal\n"), "{err}");
    let (code, out, err) = run(dir.path(), &["details"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("storage 1: optimal\n"), "{out}");
    assert_eq!(state_of(&out, "a").as_deref(), Some("optimal"), "{out}");
    assert_eq!(state_of(&out, "b").as_deref(), Some("optimal"), "{out}");
    assert!(out.contains("local var/b/Data.fs"), "{out}");
    // --admin names the socket explicitly.
    let (code, out, _) = run(dir.path(), &["status", "--admin", "var/admin.sock"]);
    assert_eq!((code, out.as_str()), (0, "optimal\n"));
    // Unknown backend: refused, exit 1.
    let (code, _, err) = run(dir.path(), &["disable", "zz"]);
    assert_eq!(code, 1);
    assert!(err.contains("no backend named \"zz\""), "{err}");
    // Reload without a config file: refused.
    let (code, _, err) = run(dir.path(), &["reload"]);
    assert_eq!(code, 1);
    assert!(err.contains("no config file"), "{err}");
    s.stop();
}

#[test]
fn disable_degrades_the_raid_and_details_shows_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = serve(dir.path(), &[]);
    let (code, _, err) = run(dir.path(), &["disable", "b", "--storage", "1"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = run(dir.path(), &["status"]);
    assert_eq!((code, out.as_str()), (2, "degraded\n"));
    let (_, out, _) = run(dir.path(), &["details"]);
    assert_eq!(state_of(&out, "b").as_deref(), Some("disabled"), "{out}");
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("b ") && l.ends_with("disabled by the operator")),
        "{out}"
    );
    assert_eq!(state_of(&out, "a").as_deref(), Some("optimal"), "{out}");
    // The last optimal backend stays.
    let (code, _, err) = run(dir.path(), &["disable", "a"]);
    assert_eq!(code, 1);
    assert!(err.contains("last optimal"), "{err}");
    s.stop();
    // The state survives a restart.
    let s = serve(dir.path(), &[]);
    let (code, out, _) = run(dir.path(), &["status"]);
    assert_eq!((code, out.as_str()), (2, "degraded\n"));
    s.stop();
}

#[test]
fn reload_adds_a_backend_as_degraded() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("z.toml"), TWO).expect("write");
    let s = serve(dir.path(), &["--config", "z.toml"]);
    std::fs::write(dir.path().join("z.toml"), format!("{TWO}{C}")).expect("write");
    let (code, out, err) = run(dir.path(), &["reload", "--config", "z.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("added c"), "{out}");
    let (_, out, _) = run(dir.path(), &["details", "--config", "z.toml"]);
    assert_eq!(state_of(&out, "c").as_deref(), Some("degraded"), "{out}");
    // It is opened in the background, then reported connected.
    let t0 = Instant::now();
    loop {
        let (_, out, _) = run(dir.path(), &["details", "--config", "z.toml"]);
        let c = out.lines().find(|l| l.trim_start().starts_with("c ")).unwrap_or_default().to_string();
        if c.contains(" yes ") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "c never came up:\n{out}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(dir.path().join("var/c/Data.fs").is_file());
    let (code, out, _) = run(dir.path(), &["status", "--config", "z.toml"]);
    assert_eq!((code, out.as_str()), (2, "degraded\n"));
    // Removing it again.
    std::fs::write(dir.path().join("z.toml"), TWO).expect("write");
    let (code, out, err) = run(dir.path(), &["reload", "--config", "z.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("removed c"), "{out}");
    let (_, out, _) = run(dir.path(), &["details", "--config", "z.toml"]);
    assert_eq!(state_of(&out, "c"), None, "{out}");
    s.stop();
}

#[test]
fn reload_refuses_a_broken_config_a_changed_backend_and_the_last_optimal_removal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = "[server]\nadmin = \"run/admin.sock\"\n[[storage]]\nname = \"1\"\n[[storage.backend]]\nname = \"a\"\npath = \"var/a/Data.fs\"\n";
    let file = dir.path().join("z.toml");
    std::fs::write(&file, one).expect("write");
    let s = serve(dir.path(), &["--config", "z.toml"]);
    let details = || run(dir.path(), &["details", "--admin", "run/admin.sock"]).1;
    let before = details();
    assert_eq!(state_of(&before, "a").as_deref(), Some("optimal"), "{before}");

    // A file that does not parse: exit 1 with the error, nothing changes.
    std::fs::write(&file, format!("{one}\nbogus = [\n")).expect("write");
    let (code, _, err) = run(dir.path(), &["reload", "--admin", "run/admin.sock"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("zeoraid: ") && err.contains("z.toml:10:"), "{err}");
    assert_eq!(details(), before);

    // Replacing the only optimal backend: removing it is refused, and b is not added either.
    std::fs::write(&file, one.replace("name = \"a\"\npath = \"var/a", "name = \"b\"\npath = \"var/b"))
        .expect("write");
    let (code, _, err) = run(dir.path(), &["reload", "--admin", "run/admin.sock"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("\"a\" is the last optimal backend") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(details(), before);

    // A backend changed in place.
    std::fs::write(&file, one.replace("var/a/Data.fs", "var/a2/Data.fs")).expect("write");
    let (code, _, err) = run(dir.path(), &["reload", "--admin", "run/admin.sock"]);
    assert_eq!(code, 1);
    assert!(err.contains("remove it and add it under a new name"), "{err}");
    assert_eq!(details(), before);

    // The same file: nothing to do; a [server] change is reported as needing a restart.
    std::fs::write(&file, one).expect("write");
    let (code, out, err) = run(dir.path(), &["reload", "--config", "z.toml"]);
    assert_eq!((code, out.as_str()), (0, "nothing changed\n"), "{err}");
    std::fs::write(&file, one.replace("[server]\n", "[server]\nshutdown_grace = 3\n")).expect("write");
    let (code, out, err) = run(dir.path(), &["reload", "--config", "z.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("next restart"), "{out}");
    s.stop();
}

#[test]
fn a_corrupt_state_file_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("var")).expect("mkdir");
    std::fs::write(dir.path().join("var/1.raid-state"), b"ZRRAIDST\x01\0\0\0garbage").expect("write");
    let (code, _, err) = run(dir.path(), &["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 1, "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("var/1.raid-state") && last.contains("refusing to start"), "{err}");
    assert!(!dir.path().join("var/a/Data.fs").exists(), "no backend was opened");
}

#[test]
fn status_without_a_server_is_unknown_exit_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, out, err) = run(dir.path(), &["status"]);
    assert_eq!((code, out.as_str()), (3, ""));
    assert!(err.contains("var/admin.sock") && err.contains("cannot connect"), "{err}");
    let (code, _, _) = run(dir.path(), &["details"]);
    assert_eq!(code, 1);
}

#[test]
fn a_raid_with_an_unreachable_remote_backend_serves_within_the_connect_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens on port 1.
    let conf = "[[storage]]\nname = \"1\"\nconnect_timeout = 1\n[[storage.backend]]\nname = \"a\"\n\
                path = \"var/a/Data.fs\"\n[[storage.backend]]\nname = \"far\"\nzeo = \"127.0.0.1:1\"\n";
    std::fs::write(dir.path().join("z.toml"), conf).expect("write");
    let t0 = Instant::now();
    let s = serve(dir.path(), &["--config", "z.toml"]);
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(4), "ready after {took:?}");
    assert!(
        s.lines.iter().any(|l| l.contains("far") && l.contains("not up within the connect timeout (1s)")),
        "{:#?}",
        s.lines
    );
    let (code, out, err) = run(dir.path(), &["details", "--config", "z.toml"]);
    assert_eq!(code, 0, "{err}");
    let far = out.lines().find(|l| l.trim_start().starts_with("far ")).unwrap_or_else(|| panic!("{out}"));
    assert!(far.contains("zeo 127.0.0.1:1 storage 1") && far.contains(" no "), "{out}");
    assert_eq!(state_of(&out, "far").as_deref(), Some("degraded"), "{out}");
    assert_eq!(state_of(&out, "a").as_deref(), Some("optimal"), "{out}");
    let (code, out, _) = run(dir.path(), &["status", "--config", "z.toml"]);
    assert_eq!((code, out.as_str()), (2, "degraded\n"));
    s.stop();
}

#[test]
fn a_server_whose_stderr_is_closed_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = serve(dir.path(), &[]);
    // The reader thread ends at the next line: the server's stderr is then closed.
    s.rest = mpsc::channel().1;
    for _ in 0..3 {
        // Each request logs (at info) into the closed pipe.
        let (code, out, err) = run(dir.path(), &["disable", "zz"]);
        assert_eq!((code, out.as_str()), (1, ""), "{err}");
        let (code, out, err) = run(dir.path(), &["status"]);
        assert_eq!((code, out.as_str()), (0, "optimal\n"), "{err}");
    }
    s.stop();
}
