//! Wire codec benchmark: decode and encode of typical ZEO messages in both encodings.
//!
//! Run with `cargo bench -p zeoraid-core --bench wire` (add `-- --quick` for a short run).
//! Each case runs for a fixed wall-clock budget after a warm-up; the figure reported is the
//! best of five rounds, in messages per second and, for bulk data, bytes per second.
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock; core itself never does
#![allow(missing_docs)]

use bytes::Bytes;
use std::hint::black_box;
use std::time::{Duration, Instant};
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::wire::codec::Codec;
use zeoraid_core::wire::message::{ClientMessage, MsgId, ServerMessage};
use zeoraid_core::wire::push::Push;
use zeoraid_core::wire::reply::{LoadBeforeResult, Reply};
use zeoraid_core::wire::request::{Method, Request};
use zeoraid_core::wire::types::TxnId;
use zeoraid_core::wire::value::{Text, Value};
use zeoraid_core::wire::Encoding;

type EncodeFn = Box<dyn Fn(&Codec, &mut Vec<u8>)>;
type DecodeFn = Box<dyn Fn(&Codec, &Bytes)>;

struct Case {
    name: &'static str,
    /// Bytes of object data the message carries (for throughput), 0 for small messages.
    data_len: usize,
    encode: EncodeFn,
    decode: DecodeFn,
}

fn load_before_reply(len: usize) -> ServerMessage {
    let oid = Oid::new(0x1234);
    let reply = Reply::LoadBefore(Some(LoadBeforeResult {
        data: Bytes::from(vec![0xab; len]),
        start: Tid::new(0x040d_40fe_c8af_a744),
        end: None,
    }));
    ServerMessage::reply(MsgId::load_before(oid, Tid::MAX), &reply)
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for (name, len) in [("loadBefore reply, 1 KiB", 1024), ("loadBefore reply, 1 MiB", 1 << 20)] {
        let msg = load_before_reply(len);
        out.push(Case {
            name,
            data_len: len,
            encode: Box::new(move |c, buf| c.encode_server(&msg, buf).expect("encodes")),
            decode: Box::new(|c, p| {
                let ServerMessage::Reply { result, .. } = c.decode_server(p).expect("decodes") else {
                    panic!("not a reply")
                };
                black_box(Reply::from_value(Method::LoadBefore, &result).expect("types"));
            }),
        });
    }
    let storea = ClientMessage::Async {
        msgid: MsgId::int(0),
        request: Request::Storea {
            oid: Oid::new(42),
            serial: Tid::new(0x040d_40fe_c8af_a744),
            data: Bytes::from(vec![0x5a; 1024]),
            txn: TxnId(Value::Int(140_088_416_814_416)),
        },
    };
    out.push(Case {
        name: "storea, 1 KiB",
        data_len: 1024,
        encode: Box::new(move |c, buf| c.encode_client(&storea, buf).expect("encodes")),
        decode: Box::new(|c, p| {
            black_box(c.decode_client(p).expect("decodes"));
        }),
    });
    let inval = ServerMessage::Push(Push::InvalidateTransaction {
        tid: Tid::new(0x040d_40fe_c8af_a744),
        oids: (1..=1000).map(Oid::new).collect(),
    });
    out.push(Case {
        name: "invalidateTransaction, 1,000 oids",
        data_len: 0,
        encode: Box::new(move |c, buf| c.encode_server(&inval, buf).expect("encodes")),
        decode: Box::new(|c, p| {
            black_box(c.decode_server(p).expect("decodes"));
        }),
    });
    let oid = Oid::new(0x1234);
    let before = Tid::new(0x040d_40fe_c8af_a744);
    let load_before = ClientMessage::Call {
        msgid: MsgId::load_before(oid, before),
        request: Request::LoadBefore { oid, before },
    };
    out.push(Case {
        name: "loadBefore call",
        data_len: 0,
        encode: Box::new(move |c, buf| c.encode_client(&load_before, buf).expect("encodes")),
        decode: Box::new(|c, p| {
            black_box(c.decode_client(p).expect("decodes"));
        }),
    });
    // The two replies of a commit, as a stock server sends them: vote's empty list (no
    // server-side changes) and tpc_finish's tid. Decoding includes typing the result.
    for (name, method, reply) in [
        ("vote reply", Method::Vote, Reply::Vote(Vec::new())),
        ("tpc_finish reply", Method::TpcFinish, Reply::TpcFinish(Some(before))),
    ] {
        let msg = ServerMessage::reply(MsgId::int(7), &reply);
        out.push(Case {
            name,
            data_len: 0,
            encode: Box::new(move |c, buf| c.encode_server(&msg, buf).expect("encodes")),
            decode: Box::new(move |c, p| {
                let ServerMessage::Reply { result, .. } = c.decode_server(p).expect("decodes") else {
                    panic!("not a reply")
                };
                black_box(Reply::from_value(method, &result).expect("types"));
            }),
        });
    }
    let register = ClientMessage::Call {
        msgid: MsgId::int(1),
        request: Request::Register { storage: Text::from_static("1"), read_only: false },
    };
    out.push(Case {
        name: "register",
        data_len: 0,
        encode: Box::new(move |c, buf| c.encode_client(&register, buf).expect("encodes")),
        decode: Box::new(|c, p| {
            black_box(c.decode_client(p).expect("decodes"));
        }),
    });
    out
}

/// Best-of-`rounds` operations per second of `f`, each round lasting about `budget`.
fn measure(budget: Duration, rounds: usize, mut f: impl FnMut()) -> f64 {
    // Warm up and size a batch so that reading the clock costs nothing measurable.
    let start = Instant::now();
    let mut batch = 1u64;
    loop {
        for _ in 0..batch {
            f();
        }
        if start.elapsed() > budget / 10 {
            break;
        }
        batch *= 2;
    }
    let mut best: f64 = 0.0;
    for _ in 0..rounds {
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < budget {
            for _ in 0..batch {
                f();
            }
            n += batch;
        }
        best = best.max(n as f64 / t.elapsed().as_secs_f64());
    }
    best
}

/// Runs `f` exactly `n` times. Not inlined, so that an instruction counter can be limited to
/// it: `valgrind --tool=callgrind --toggle-collect='*counted*'` (see `--iters` below).
#[inline(never)]
fn counted(n: u64, f: &mut dyn FnMut()) {
    for _ in 0..n {
        f();
    }
}

fn human_rate(ops: f64) -> String {
    if ops >= 1e6 {
        format!("{:.2} M/s", ops / 1e6)
    } else if ops >= 1e3 {
        format!("{:.1} k/s", ops / 1e3)
    } else {
        format!("{ops:.0} /s")
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--filter TEXT` runs only the cases whose name contains TEXT (for profiling one case).
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let filter = arg("--filter");
    // `--iters N` runs each selected operation exactly N times instead of timing it, for
    // instruction counts; `--op encode|decode` and `--encoding pickle|msgpack` narrow it down.
    let iters = arg("--iters").map(|n| n.parse::<u64>().expect("--iters takes a count"));
    let only_op = arg("--op");
    let only_encoding = arg("--encoding");
    let (budget, rounds) =
        if quick { (Duration::from_millis(100), 2) } else { (Duration::from_millis(500), 5) };
    println!("| message | encoding | op | frame bytes | rate | data throughput |");
    println!("|---|---|---|---:|---:|---:|");
    for case in cases() {
        if filter.as_ref().is_some_and(|f| !case.name.contains(f.as_str())) {
            continue;
        }
        for encoding in [Encoding::Pickle, Encoding::Msgpack] {
            let codec = Codec::new(encoding);
            let mut buf = Vec::new();
            (case.encode)(&codec, &mut buf);
            let payload = Bytes::from(buf.clone());
            let enc_name = match encoding {
                Encoding::Pickle => "pickle",
                Encoding::Msgpack => "msgpack",
            };
            if only_encoding.as_ref().is_some_and(|e| e != enc_name) {
                continue;
            }
            let mut scratch = Vec::with_capacity(buf.len());
            if let Some(n) = iters {
                if only_op.as_deref() != Some("decode") {
                    counted(n, &mut || {
                        scratch.clear();
                        (case.encode)(&codec, &mut scratch);
                        black_box(&scratch);
                    });
                }
                if only_op.as_deref() != Some("encode") {
                    counted(n, &mut || (case.decode)(&codec, &payload));
                }
                println!("| {} | {enc_name} | {n} iterations | {} | – | – |", case.name, payload.len());
                continue;
            }
            let enc = measure(budget, rounds, || {
                scratch.clear();
                (case.encode)(&codec, &mut scratch);
                black_box(&scratch);
            });
            let dec = measure(budget, rounds, || (case.decode)(&codec, &payload));
            for (op, rate) in [("encode", enc), ("decode", dec)] {
                let tput = if case.data_len > 0 {
                    format!("{:.2} GB/s", rate * case.data_len as f64 / 1e9)
                } else {
                    "–".into()
                };
                println!(
                    "| {} | {enc_name} | {op} | {} | {} | {tput} |",
                    case.name,
                    payload.len(),
                    human_rate(rate)
                );
            }
        }
    }
}
