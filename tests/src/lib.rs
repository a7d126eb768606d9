//! Whole-process tests of zeoraid (they arrive with `zeoraid serve`), and the harness that
//! brings the real Python ZODB and ZEO into them: [`python::PythonEnv`].
#![forbid(unsafe_code)]

pub mod python;
