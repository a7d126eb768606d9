//! The Python side of the interop tests: a venv with the real ZODB and ZEO from PyPI.
//!
//! [`PythonEnv::get`] builds, once per test process, a venv at
//! `<target dir>/pyenv-<hash>` with `python3 -m venv` and installs the pinned
//! `tests/python/requirements.txt` into it with the venv's own pip; later processes (and later
//! `cargo test` runs) find it complete and reuse it. The hash covers the requirements file, the
//! base interpreter's version and this harness's layout version, so a changed pin builds a new
//! venv beside the old one.
//!
//! Several test processes may start at once (cargo runs test binaries one after the other, but
//! nextest and parallel CI jobs do not): the first takes an exclusive lock on
//! `<target dir>/pyenv-<hash>.lock`, the others wait for it. The venv counts as complete only
//! once the marker file `.zeoraid-complete` exists in it, and that marker is written to a
//! temporary name and renamed into place after pip succeeded, so a crashed set-up is never
//! mistaken for a finished one: the next process removes the partial venv and starts over.
//!
//! Nothing here skips: a missing `python3`, a missing `venv` module or a failing pip is an
//! error that says what to install. `ZEORAID_PYTHON` names another base interpreter.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The environment variable that names the base interpreter (default `python3`).
pub const PYTHON_VAR: &str = "ZEORAID_PYTHON";

/// The oldest Python that ZODB 6.4 and ZEO 6.2 support.
pub const MIN_PYTHON: (u32, u32) = (3, 10);

/// Bumped whenever the venv's layout or set-up steps change, so old venvs are not reused.
const HARNESS_VERSION: &str = "zeoraid-pyenv/1";

/// The file whose presence says the venv is complete.
const COMPLETE_MARKER: &str = ".zeoraid-complete";

/// What went wrong while setting up or using the Python environment.
#[derive(Debug, thiserror::Error)]
pub enum PythonError {
    /// The base interpreter could not be started at all.
    #[error(
        "cannot run the Python interpreter `{python}`: {source}\n\
         zeoraid's interop tests need Python {}.{} or newer with its venv module, and PyPI (or \
         PIP_INDEX_URL / PIP_FIND_LINKS) reachable. Install it (Debian/Ubuntu: `apt-get install \
         python3 python3-venv`) or set {PYTHON_VAR} to an interpreter.",
        MIN_PYTHON.0,
        MIN_PYTHON.1
    )]
    PythonMissing {
        /// The interpreter that was tried.
        python: String,
        /// Why it could not be started.
        source: io::Error,
    },
    /// The base interpreter started but is unusable (too old, or its answer made no sense).
    #[error(
        "the Python interpreter `{python}` cannot be used: {reason}\n\
         zeoraid's interop tests need Python {}.{} or newer with its venv module. Install one \
         (Debian/Ubuntu: `apt-get install python3 python3-venv`) or set {PYTHON_VAR} to one.",
        MIN_PYTHON.0,
        MIN_PYTHON.1
    )]
    PythonUnusable {
        /// The interpreter that was tried.
        python: String,
        /// What is wrong with it, with its output.
        reason: String,
    },
    /// `python3 -m venv` failed.
    #[error(
        "`{python} -m venv {}` failed ({status}).\n\
         Debian and Ubuntu ship the venv module separately: `apt-get install python3-venv`.\n\
         --- stderr ---\n{stderr}\n--- stdout ---\n{stdout}",
        venv.display()
    )]
    VenvFailed {
        /// The base interpreter.
        python: String,
        /// The venv directory.
        venv: PathBuf,
        /// How `python -m venv` ended.
        status: ExitStatus,
        /// Its standard output.
        stdout: String,
        /// Its standard error.
        stderr: String,
    },
    /// pip could not install the requirements (or `pip check` found them inconsistent).
    #[error(
        "`pip {step}` of {} into the venv {} failed ({status}).\n\
         The interop tests install the real ZODB and ZEO from PyPI: PyPI (or the index in \
         PIP_INDEX_URL, or wheels in PIP_FIND_LINKS) must be reachable.\n\
         --- pip's stderr ---\n{stderr}\n--- pip's stdout ---\n{stdout}",
        requirements.display(),
        venv.display()
    )]
    PipFailed {
        /// `install` or `check`.
        step: &'static str,
        /// The requirements file.
        requirements: PathBuf,
        /// The venv directory.
        venv: PathBuf,
        /// How pip ended.
        status: ExitStatus,
        /// pip's standard output.
        stdout: String,
        /// pip's standard error.
        stderr: String,
    },
    /// A file-system operation of the set-up failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: io::Error,
    },
    /// A script or command run with the venv's Python exited unsuccessfully.
    #[error("`{command}` failed ({status})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")]
    ScriptFailed {
        /// The command line, for the message.
        command: String,
        /// How it ended.
        status: ExitStatus,
        /// Its standard output.
        stdout: String,
        /// Its standard error.
        stderr: String,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> PythonError {
    let context = context.into();
    move |source| PythonError::Io { context, source }
}

/// A complete venv with the pinned ZODB and ZEO.
#[derive(Debug)]
pub struct PythonEnv {
    venv: PathBuf,
    python: PathBuf,
    base_version: String,
    setup: Option<Duration>,
}

impl PythonEnv {
    /// The venv for this test process, built on first use (see the module documentation).
    ///
    /// # Panics
    /// When the venv cannot be set up, with the message of the [`PythonError`]: the interop
    /// tests never skip.
    pub fn get() -> &'static PythonEnv {
        match Self::try_get() {
            Ok(env) => env,
            Err(e) => panic!("the Python interop environment is not available:\n{e}"),
        }
    }

    /// Like [`PythonEnv::get`], but returns the (cached) error instead of panicking.
    pub fn try_get() -> Result<&'static PythonEnv, &'static PythonError> {
        static ENV: OnceLock<Result<PythonEnv, PythonError>> = OnceLock::new();
        ENV.get_or_init(|| {
            let python = std::env::var_os(PYTHON_VAR).unwrap_or_else(|| OsString::from("python3"));
            Self::create(&python, &requirements_path(), &target_dir())
        })
        .as_ref()
    }

    /// Sets up (or finds complete) the venv for `requirements` under `target_dir`, built
    /// with the base interpreter `base_python`. This is what [`PythonEnv::get`] calls, without
    /// its per-process cache; it is safe to call from several threads and processes at once.
    pub fn create(
        base_python: &OsStr,
        requirements: &Path,
        target_dir: &Path,
    ) -> Result<PythonEnv, PythonError> {
        let base_version = probe_python(base_python)?;
        let requirements_text =
            fs::read(requirements).map_err(io_error(format!("reading {}", requirements.display())))?;
        let mut hash = Fnv1a::new();
        for part in [HARNESS_VERSION.as_bytes(), base_version.as_bytes(), &requirements_text] {
            hash.write(part);
            hash.write(&[0]);
        }
        let name = format!("pyenv-{:016x}", hash.finish());
        let venv = target_dir.join(&name);
        let mut env = PythonEnv { python: venv_python(&venv), venv, base_version, setup: None };
        if env.is_complete() {
            return Ok(env);
        }

        fs::create_dir_all(target_dir).map_err(io_error(format!("creating {}", target_dir.display())))?;
        let lock_path = target_dir.join(format!("{name}.lock"));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(format!("opening {}", lock_path.display())))?;
        lock_exclusive(&lock).map_err(io_error(format!("locking {}", lock_path.display())))?;
        // Another process may have completed the venv while this one waited for the lock.
        if env.is_complete() {
            return Ok(env);
        }
        let started = Instant::now();
        env.build(base_python, requirements, &requirements_text)?;
        env.setup = Some(started.elapsed());
        drop(lock); // closing the file releases the lock
        Ok(env)
    }

    fn is_complete(&self) -> bool {
        self.venv.join(COMPLETE_MARKER).is_file() && self.python.exists()
    }

    /// Builds the venv from scratch; the caller holds the lock.
    fn build(
        &self,
        base_python: &OsStr,
        requirements: &Path,
        requirements_text: &[u8],
    ) -> Result<(), PythonError> {
        if self.venv.exists() {
            // Left by a set-up that died half-way.
            fs::remove_dir_all(&self.venv)
                .map_err(io_error(format!("removing the partial venv {}", self.venv.display())))?;
        }
        let out = clean_command(base_python)
            .arg("-m")
            .arg("venv")
            .arg(&self.venv)
            .output()
            .map_err(|source| PythonError::PythonMissing { python: lossy(base_python), source })?;
        if !out.status.success() {
            return Err(PythonError::VenvFailed {
                python: lossy(base_python),
                venv: self.venv.clone(),
                status: out.status,
                stdout: text(&out.stdout),
                stderr: text(&out.stderr),
            });
        }

        for (step, args) in [
            (
                "install",
                vec![
                    OsStr::new("install"),
                    OsStr::new("--no-input"),
                    OsStr::new("--prefer-binary"),
                    OsStr::new("--requirement"),
                    requirements.as_os_str(),
                ],
            ),
            ("check", vec![OsStr::new("check")]),
        ] {
            let out = self
                .command()
                .args(["-m", "pip", "--disable-pip-version-check"])
                .args(&args)
                .output()
                .map_err(io_error(format!("running {}", self.python.display())))?;
            if !out.status.success() {
                return Err(PythonError::PipFailed {
                    step,
                    requirements: requirements.to_path_buf(),
                    venv: self.venv.clone(),
                    status: out.status,
                    stdout: text(&out.stdout),
                    stderr: text(&out.stderr),
                });
            }
        }

        // Mark the venv complete: write the marker under a temporary name, then rename it.
        let marker = self.venv.join(COMPLETE_MARKER);
        let tmp = self.venv.join(format!("{COMPLETE_MARKER}.tmp-{}", std::process::id()));
        let mut body = format!("{HARNESS_VERSION}\nbase python {}\n", self.base_version);
        body.push_str(&String::from_utf8_lossy(requirements_text));
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(body.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &marker)
        };
        write().map_err(io_error(format!("writing {}", marker.display())))
    }

    /// The venv's interpreter.
    pub fn python_path(&self) -> &Path {
        &self.python
    }

    /// The venv's directory, `<target dir>/pyenv-<hash>`.
    pub fn venv_dir(&self) -> &Path {
        &self.venv
    }

    /// The version of the base interpreter the venv was made with, e.g. `3.11.7`.
    pub fn base_python_version(&self) -> &str {
        &self.base_version
    }

    /// How long creating the venv and installing the requirements took, when this call
    /// built it (`None` when it was found complete).
    pub fn setup_duration(&self) -> Option<Duration> {
        self.setup
    }

    /// A command that runs the venv's Python with a clean, deterministic environment:
    /// `PYTHONPATH`, `PYTHONHOME` and `PYTHONSTARTUP` removed, `PYTHONHASHSEED=0`, no
    /// bytecode written next to the scripts, UTF-8 standard streams.
    pub fn command(&self) -> Command {
        clean_command(self.python.as_os_str())
    }

    /// Runs `script` with the venv's Python and returns its output once it exited with
    /// status 0. A relative `script` is taken relative to `tests/python/` (see
    /// [`scripts_dir`]). Fails with the script's stdout and stderr in the error otherwise.
    pub fn run_script(&self, script: &Path, args: &[&OsStr]) -> Result<Output, PythonError> {
        let script = scripts_dir().join(script);
        let mut cmd = self.command();
        cmd.arg(&script).args(args);
        self.run(cmd)
    }

    /// Runs `python -c code` with the venv's Python, like [`PythonEnv::run_script`].
    pub fn run_code(&self, code: &str, args: &[&OsStr]) -> Result<Output, PythonError> {
        let mut cmd = self.command();
        cmd.arg("-c").arg(code).args(args);
        self.run(cmd)
    }

    fn run(&self, mut cmd: Command) -> Result<Output, PythonError> {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(io_error(format!("running {}", self.python.display())))?;
        if out.status.success() {
            return Ok(out);
        }
        let mut command = lossy(cmd.get_program());
        for arg in cmd.get_args() {
            let _ = write!(command, " {}", lossy(arg));
        }
        Err(PythonError::ScriptFailed {
            command,
            status: out.status,
            stdout: text(&out.stdout),
            stderr: text(&out.stderr),
        })
    }
}

/// The workspace's root directory (the parent of this package's directory).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The workspace's target directory: `CARGO_TARGET_DIR` when set (relative to the workspace
/// root when relative), else `<workspace root>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// `tests/python/`: the interop scripts and the requirements file.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// `tests/python/requirements.txt`: the pinned Python packages.
pub fn requirements_path() -> PathBuf {
    scripts_dir().join("requirements.txt")
}

/// Runs the base interpreter once: is it there, is it new enough, does it have `venv`?
/// Returns its version (`3.11.7`).
fn probe_python(python: &OsStr) -> Result<String, PythonError> {
    const PROBE: &str = "import sys\n\
        print('%d.%d.%d' % sys.version_info[:3])\n\
        import venv, ensurepip\n";
    let out = clean_command(python)
        .arg("-c")
        .arg(PROBE)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| PythonError::PythonMissing { python: lossy(python), source })?;
    let stdout = text(&out.stdout);
    let version = stdout.trim().to_string();
    let unusable = |reason: String| PythonError::PythonUnusable { python: lossy(python), reason };
    let parts: Vec<u32> = version.split('.').filter_map(|p| p.parse().ok()).collect();
    let (major, minor) = match parts[..] {
        [major, minor, _] => (major, minor),
        _ => {
            return Err(unusable(format!(
                "asked for its version, it answered {:?} ({}), stderr: {}",
                stdout,
                out.status,
                text(&out.stderr)
            )))
        }
    };
    if (major, minor) < MIN_PYTHON {
        return Err(unusable(format!("it is Python {version}")));
    }
    if !out.status.success() {
        return Err(unusable(format!(
            "it has no venv/ensurepip module ({}): {}",
            out.status,
            text(&out.stderr)
        )));
    }
    Ok(version)
}

fn clean_command(python: &OsStr) -> Command {
    let mut cmd = Command::new(python);
    cmd.env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONSTARTUP")
        .env("PYTHONHASHSEED", "0")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONIOENCODING", "utf-8");
    cmd
}

fn venv_python(venv: &Path) -> PathBuf {
    if cfg!(windows) {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    }
}

#[cfg(unix)]
fn lock_exclusive(file: &File) -> io::Result<()> {
    rustix::fs::flock(file, rustix::fs::FlockOperation::LockExclusive).map_err(io::Error::from)
}

#[cfg(not(unix))]
#[allow(clippy::incompatible_msrv)] // File::lock is Rust 1.89; only non-unix builds need it
fn lock_exclusive(file: &File) -> io::Result<()> {
    file.lock()
}

fn lossy(s: &OsStr) -> String {
    s.to_string_lossy().into_owned()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// FNV-1a, 64 bits: a hash that is the same on every machine and every Rust release.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        let hash = |s: &str| {
            let mut h = Fnv1a::new();
            h.write(s.as_bytes());
            h.finish()
        };
        assert_eq!(hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn a_missing_interpreter_says_what_to_install() {
        let err = probe_python(OsStr::new("/nonexistent/zeoraid/python3"))
            .expect_err("a missing interpreter must be an error");
        assert!(matches!(err, PythonError::PythonMissing { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("apt-get install python3 python3-venv"), "{message}");
        assert!(message.contains(PYTHON_VAR), "{message}");
    }

    #[test]
    fn the_target_dir_is_inside_the_workspace_by_default() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(requirements_path().is_file());
        if std::env::var_os("CARGO_TARGET_DIR").is_none() {
            assert_eq!(target_dir(), workspace_root().join("target"));
        }
    }
}
