//! Whole-process tests of the `zeoraid` binary. They arrive with `zeoraid serve`.
#![forbid(unsafe_code)]
