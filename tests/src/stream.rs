//! A stream of commits from stock ZEO clients in the background (tests/python/commit_stream.py),
//! for the tests that fail or recover backends under load: it counts the acknowledged commits
//! and the errors the clients saw while it runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::python::{scripts_dir, PythonEnv};
use crate::server::{run_with_deadline, ServerError, ServerProcess};

/// commit_stream.py running in the background against a server. Dropping it (a failed test)
/// asks the clients to stop.
#[derive(Debug)]
pub struct Stream {
    dir: PathBuf,
    run: Option<JoinHandle<Result<Output, ServerError>>>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.run.is_some() {
            let _ = fs::write(self.dir.join("stop"), b"");
        }
    }
}

impl Stream {
    /// Starts `clients` client threads in one process, committing to the root's `stream-N`
    /// objects, writing to `<server dir>/stream/`.
    pub fn start(server: &ServerProcess, clients: u32) -> Stream {
        Stream::start_named(server, clients, "stream", Duration::from_secs(120), None)
    }

    /// Starts a stream whose objects are the root's `NAME-N` (several streams with other names
    /// can run at once, each a process of its own), writing to `<server dir>/NAME/`, for at
    /// most `max` (then the clients stop by themselves); `rate` paces each client to that many
    /// commits per second (`None`: as fast as it can).
    pub fn start_named(
        server: &ServerProcess,
        clients: u32,
        name: &str,
        max: Duration,
        rate: Option<u32>,
    ) -> Stream {
        let dir = server.dir().join(name);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let mut cmd = PythonEnv::get().command();
        cmd.arg(scripts_dir().join("commit_stream.py"))
            .arg(server.address_arg())
            .arg(clients.to_string())
            .arg(&dir)
            .arg(max.as_secs().to_string())
            .arg(name)
            .arg(rate.unwrap_or(0).to_string());
        let limit = max + Duration::from_secs(60);
        let run = std::thread::spawn(move || run_with_deadline(cmd, limit));
        Stream { dir, run: Some(run) }
    }

    /// Acknowledged commits so far.
    pub fn commits(&self) -> usize {
        count_commits(&self.dir)
    }

    /// The errors the clients saw so far.
    pub fn errors(&self) -> Vec<String> {
        stream_errors(&self.dir)
    }

    /// Waits until at least `n` commits were acknowledged, failing on any client error.
    pub fn wait_for(&self, n: usize, limit: Duration, what: &str) {
        let deadline = Instant::now() + limit;
        loop {
            let errors = self.errors();
            assert!(errors.is_empty(), "{what}: the clients saw errors: {errors:#?}");
            let commits = self.commits();
            if commits >= n {
                return;
            }
            assert!(
                Instant::now() < deadline && self.run.as_ref().is_some_and(|r| !r.is_finished()),
                "{what}: {commits} commits acknowledged, expected {n} within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asks the clients to stop (without waiting; [`Stream::finish`] waits).
    pub fn stop(&self) {
        fs::write(self.dir.join("stop"), b"").expect("write the stop file");
    }

    /// Stops the clients and checks that none saw an error; returns the number of acknowledged
    /// commits and the file listing them (`acknowledged.json`, a `--front` file of
    /// compare_backends.py).
    pub fn finish(mut self) -> (usize, PathBuf) {
        self.stop();
        let run = self.run.take().expect("finished once");
        let out = run.join().expect("the stream thread").unwrap_or_else(|e| panic!("commit_stream.py: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "commit_stream.py failed ({}): a client saw an error\n--- stdout ---\n{stdout}\n--- stderr ---\n{}\nerrors: {:#?}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            stream_errors(&self.dir)
        );
        assert!(stdout.contains("\"errors\": 0"), "{stdout}");
        (count_commits(&self.dir), self.dir.join("acknowledged.json"))
    }
}

fn stream_errors(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("commits.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"error\""))
        .map(str::to_owned)
        .collect()
}

fn count_commits(dir: &Path) -> usize {
    fs::read_to_string(dir.join("commits.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"tid\""))
        .count()
}
