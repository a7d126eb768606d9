//! The handshake and `ruok` code against the recorded ZEO 6.2 sessions.

mod common;

use zeoraid_core::wire::handshake::{
    client_reply, encode_ruok_json, parse_client_handshake, parse_ruok_json, parse_server_announcement,
    server_announcement, ClientHello,
};
use zeoraid_core::wire::value::{Limits, Value};
use zeoraid_core::wire::Encoding;

/// The encoding a vector file was recorded with, from its name (`x.msgpack.jsonl`).
fn file_encoding(file: &str) -> Encoding {
    if file.ends_with(".msgpack.jsonl") {
        Encoding::Msgpack
    } else if file.ends_with(".pickle.jsonl") {
        Encoding::Pickle
    } else {
        panic!("cannot tell the encoding of {file}")
    }
}

#[test]
fn every_recorded_handshake_parses_to_the_files_encoding() {
    let mut seen = [0usize; 3];
    for frame in common::frames(".jsonl").iter().filter(|f| f.encoding == "handshake") {
        let enc = file_encoding(&frame.file);
        match frame.dir.as_str() {
            "s2c" => {
                let got = parse_server_announcement(&frame.payload);
                assert_eq!(got, Ok(enc), "{}", frame.name());
                // What a Rust server would have sent, and what a Rust client would answer.
                assert_eq!(server_announcement(enc), &frame.payload[..], "{}", frame.name());
                seen[0] += 1;
            }
            "c2s" if frame.file.starts_with("ruok.") => {
                assert_eq!(parse_client_handshake(&frame.payload), Ok(ClientHello::Ruok));
                seen[1] += 1;
            }
            "c2s" => {
                let got = parse_client_handshake(&frame.payload);
                assert_eq!(got, Ok(ClientHello::Protocol(enc)), "{}", frame.name());
                assert_eq!(client_reply(enc), frame.payload[..], "{}", frame.name());
                seen[2] += 1;
            }
            other => panic!("{}: direction {other}", frame.name()),
        }
    }
    // 76 handshake frames: an announcement per connection, a reply per connection, and the
    // two ruok probes.
    assert_eq!(seen[0], seen[1] + seen[2], "one announcement per connection");
    assert_eq!(seen[1], 2, "the two ruok probes");
    assert_eq!(seen.iter().sum::<usize>(), 76, "38 handshake frames per encoding");
}

#[test]
fn recorded_ruok_answers_round_trip_byte_identically() {
    let raw: Vec<_> = common::frames(".jsonl").into_iter().filter(|f| f.encoding == "raw").collect();
    assert_eq!(raw.len(), 2, "one ruok answer per encoding");
    let limits = Limits::default();
    for frame in raw {
        assert!(frame.file.starts_with("ruok."), "{}", frame.name());
        let storages =
            parse_ruok_json(&frame.payload, &limits).unwrap_or_else(|e| panic!("{}: {e}", frame.name()));
        // One storage named "1" with the §4.3 status map, typed as Python's json gives it.
        assert_eq!(storages.len(), 1);
        let (name, status) = &storages[0];
        assert_eq!(name.as_str(), "1");
        assert_eq!(status.get("connections"), Some(&Value::Int(0)));
        assert_eq!(status.get("lock_time"), Some(&Value::None));
        assert_eq!(status.get("timeout-thread-is-alive"), Some(&Value::str_static("stub")));
        assert_eq!(status.get("last-transaction"), Some(&Value::str_static("0000000000000000")));
        let Value::Map(entries) = status else { panic!("status is not a map") };
        assert_eq!(entries.len(), 13);
        let rendered = encode_ruok_json(&storages).expect("renderable");
        assert!(
            rendered == frame.payload,
            "{}:\n got {}\nwant {}",
            frame.name(),
            String::from_utf8_lossy(&rendered),
            String::from_utf8_lossy(&frame.payload)
        );
    }
}
