//! Whole-process tests of zeoraid, the ZEO server processes they run ([`server::ServerProcess`]:
//! stock `runzeo` or `zeoraid serve`), and the harness that
//! brings the real Python ZODB and ZEO into them: [`python::PythonEnv`].
#![forbid(unsafe_code)]

pub mod binaries;
pub mod history;
pub mod operator;
mod ports;
pub mod python;
pub mod raid;
pub mod server;
pub mod stream;
