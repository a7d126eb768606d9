//! Fuzz target: see `zeoraid_core::wire::fuzz::msgpack_message` for the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zeoraid_core::wire::fuzz::msgpack_message(data);
});
