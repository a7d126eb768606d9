//! The `zeoraid` command.
//!
//! The wire codec and the storage engine exist; `zeoraid serve` arrives with the ZEO server issue.
//! Until then the command says so and exits non-zero instead of pretending to serve.
#![forbid(unsafe_code)]

use std::process::ExitCode;

const USAGE: &str = "usage: zeoraid <command>

commands:
  serve      serve ZODB over ZEO (not implemented yet)
  version    print the version";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("version") | Some("--version") | Some("-V") => {
            println!("zeoraid {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("serve") => {
            eprintln!(
                "zeoraid serve: not implemented yet. This build contains the ZEO wire codec and \
                 the FileStorage engine (as a library); see README.md for the feature status."
            );
            ExitCode::from(2)
        }
        Some("help") | Some("--help") | Some("-h") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
