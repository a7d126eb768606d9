//! The release binaries of the workspace that whole-process tests run, built once per test
//! process with `cargo build --release --locked -p zeoraid-server --bin NAME` into
//! [`target_dir`] (cargo's own build-directory lock serialises concurrent test processes).

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::python::{target_dir, workspace_root};
use crate::server::{io_error, ServerError};

/// The zeoraid executable, built once per test process with
/// `cargo build --release -p zeoraid-server --bin zeoraid` into [`target_dir`] (cargo's own
/// build-directory lock serialises concurrent test processes).
///
/// # Panics
/// When the build fails, with cargo's output: the tests never skip.
pub fn zeoraid_binary() -> &'static Path {
    static BINARY: OnceLock<Result<PathBuf, ServerError>> = OnceLock::new();
    match BINARY.get_or_init(|| build_release("zeoraid")) {
        Ok(path) => path,
        Err(e) => panic!("cannot build the zeoraid binary:\n{e}"),
    }
}

/// The `zeoraid-load` executable, built like [`zeoraid_binary`].
///
/// # Panics
/// When the build fails, with cargo's output.
pub fn zeoraid_load_binary() -> &'static Path {
    static BINARY: OnceLock<Result<PathBuf, ServerError>> = OnceLock::new();
    match BINARY.get_or_init(|| build_release("zeoraid-load")) {
        Ok(path) => path,
        Err(e) => panic!("cannot build the zeoraid-load binary:\n{e}"),
    }
}

fn build_release(bin: &str) -> Result<PathBuf, ServerError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let target = target_dir();
    let out = Command::new(cargo)
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", &target)
        .args(["build", "--release", "--locked", "-p", "zeoraid-server", "--bin", bin])
        .stdin(Stdio::null())
        .output()
        .map_err(io_error("running cargo build"))?;
    if !out.status.success() {
        return Err(ServerError::BuildFailed {
            bin: bin.to_string(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let binary = target.join("release").join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(ServerError::Io {
            context: format!("cargo build succeeded but {} is missing", binary.display()),
            source: io::Error::from(io::ErrorKind::NotFound),
        })
    }
}
