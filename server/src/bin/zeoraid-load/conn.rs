//! One ZEO client connection: the handshake, framed calls, and reply matching.
//!
//! Calls get int msgids from a per-connection counter starting at 1 (also `loadBefore`, which
//! the Python client sends with an `(oid, tid)` msgid: a server echoes either). Async calls
//! carry msgid 0, as the Python client's do. Replies are matched by msgid through
//! [`Inflight`]; pushes (`invalidateTransaction`, `info`, …) may arrive between any two
//! replies and are skipped.

use super::args::Address;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeoraid_core::wire::codec::{Codec, CodecError};
use zeoraid_core::wire::error::ZeoError;
use zeoraid_core::wire::frame::{frame_header, FrameDecoder, FrameError};
use zeoraid_core::wire::handshake::{client_reply, parse_server_announcement, HandshakeError};
use zeoraid_core::wire::message::{ClientMessage, MsgId, ServerMessage};
use zeoraid_core::wire::request::Request;
use zeoraid_core::wire::value::Value;
use zeoraid_core::wire::Encoding;

/// A byte stream to a server: TCP or Unix.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why a connection failed. Every variant but [`ConnError::Server`] ends the connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    /// The connection could not be opened.
    #[error("cannot connect to {address}: {source}")]
    Connect { address: String, source: io::Error },
    /// Reading or writing failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// The server sent a bad frame header.
    #[error("framing: {0}")]
    Frame(#[from] FrameError),
    /// A frame could not be decoded, or a call not encoded.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// The server's announcement is not ZEO 5.
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// A set-up call got an error reply.
    #[error("{method} failed on the server: {class}")]
    Server { method: &'static str, class: String },
    /// A reply had the wrong shape for its call.
    #[error("unexpected reply to {method}: {detail}")]
    Reply { method: &'static str, detail: String },
}

impl ConnError {
    /// The error-count kind of a failure that ended a connection.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ConnError::Connect { .. } | ConnError::Io(_) | ConnError::Closed => "disconnect",
            ConnError::Frame(_) | ConnError::Codec(_) | ConnError::Handshake(_) | ConnError::Reply { .. } => {
                "protocol"
            }
            ConnError::Server { .. } => "server",
        }
    }
}

/// The short name of a server error's class, for error counts (`ConflictError`).
pub(crate) fn error_kind(e: &ZeoError) -> String {
    let path = e.class_path();
    let path = path.as_str();
    path.rsplit('.').next().unwrap_or(path).to_owned()
}

/// What a received message turned out to be, for the caller that keeps the calls in flight.
#[derive(Debug, PartialEq)]
pub(crate) enum Incoming<T> {
    /// The reply to an in-flight call, with the tag it was registered with.
    Reply { tag: T, result: Result<Value, ZeoError> },
    /// A push: not an answer to anything.
    Push,
    /// A reply whose msgid no call in flight has: a protocol error of the server.
    Stray(MsgId),
}

/// The calls of one connection waiting for their replies, each with a caller's tag (e.g. the
/// time it was sent). Replies may come in any order.
#[derive(Debug)]
pub(crate) struct Inflight<T> {
    calls: Vec<(i64, T)>,
}

impl<T> Default for Inflight<T> {
    fn default() -> Self {
        Inflight { calls: Vec::new() }
    }
}

impl<T> Inflight<T> {
    /// Registers a call sent with msgid `id`.
    pub(crate) fn insert(&mut self, id: i64, tag: T) {
        self.calls.push((id, tag));
    }

    /// Calls still waiting.
    pub(crate) fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Matches a received message against the calls in flight; a matched call is removed.
    pub(crate) fn accept(&mut self, msg: ServerMessage) -> Incoming<T> {
        let (msgid, result) = match msg {
            ServerMessage::Push(_) => return Incoming::Push,
            ServerMessage::Reply { msgid, result } => (msgid, Ok(result)),
            ServerMessage::Error { msgid, error } => (msgid, Err(error)),
        };
        let found = msgid.as_int().and_then(|id| self.calls.iter().position(|&(c, _)| i128::from(c) == id));
        match found {
            Some(at) => Incoming::Reply { tag: self.calls.swap_remove(at).1, result },
            None => Incoming::Stray(msgid),
        }
    }
}

/// Size of the read buffer.
const READ_CHUNK: usize = 64 * 1024;

/// A connection after the handshake.
pub(crate) struct Conn {
    io: Box<dyn Io>,
    codec: Codec,
    frames: FrameDecoder,
    /// Frames queued by `send_*`, written by [`Conn::flush`].
    out: Vec<u8>,
    rbuf: Box<[u8]>,
    /// The msgid of the next call.
    next_id: i64,
    /// Replies that matched no call (see [`Incoming::Stray`]), counted as errors by the caller.
    pub(crate) strays: u64,
}

impl Conn {
    /// Connects and does the handshake: reads the server's announcement and answers with its
    /// letter.
    pub(crate) async fn connect(address: &Address) -> Result<Conn, ConnError> {
        let connect_err = |source| ConnError::Connect { address: address.to_string(), source };
        let io: Box<dyn Io> = match address {
            Address::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a.as_str()).await.map_err(connect_err)?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
            #[cfg(unix)]
            Address::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await.map_err(connect_err)?),
            #[cfg(not(unix))]
            Address::Unix(_) => {
                return Err(connect_err(io::Error::new(io::ErrorKind::Unsupported, "no Unix sockets here")))
            }
        };
        Conn::handshake(io).await
    }

    /// Does the client's side of the handshake on an open stream.
    pub(crate) async fn handshake(io: Box<dyn Io>) -> Result<Conn, ConnError> {
        let mut conn = Conn {
            io,
            codec: Codec::new(Encoding::Pickle),
            frames: FrameDecoder::default(),
            out: Vec::new(),
            rbuf: vec![0; READ_CHUNK].into_boxed_slice(),
            next_id: 1,
            strays: 0,
        };
        let hello = conn.next_frame().await?;
        let encoding = parse_server_announcement(&hello)?;
        conn.codec = Codec::new(encoding);
        let reply = client_reply(encoding);
        conn.out.extend_from_slice(&frame_header(reply.len())?);
        conn.out.extend_from_slice(&reply);
        conn.flush().await?;
        Ok(conn)
    }

    /// The encoding the server announced.
    pub(crate) fn encoding(&self) -> Encoding {
        self.codec.encoding
    }

    fn queue(&mut self, msg: &ClientMessage) -> Result<(), ConnError> {
        let at = self.out.len();
        self.out.extend_from_slice(&[0; 4]);
        if let Err(e) = self.codec.encode_client(msg, &mut self.out) {
            self.out.truncate(at);
            return Err(e.into());
        }
        let header = match frame_header(self.out.len() - at - 4) {
            Ok(h) => h,
            Err(e) => {
                self.out.truncate(at);
                return Err(e.into());
            }
        };
        self.out[at..at + 4].copy_from_slice(&header);
        Ok(())
    }

    /// Queues an async call (no reply).
    pub(crate) fn send_async(&mut self, request: Request) -> Result<(), ConnError> {
        self.queue(&ClientMessage::Async { msgid: MsgId::int(0), request })
    }

    /// Queues a call; returns its msgid.
    pub(crate) fn send_call(&mut self, request: Request) -> Result<i64, ConnError> {
        let id = self.next_id;
        self.queue(&ClientMessage::Call { msgid: MsgId::int(id), request })?;
        self.next_id += 1;
        Ok(id)
    }

    /// Writes everything queued.
    pub(crate) async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    async fn next_frame(&mut self) -> Result<bytes::Bytes, ConnError> {
        loop {
            if let Some(frame) = self.frames.next_frame()? {
                return Ok(frame);
            }
            let n = self.io.read(&mut self.rbuf).await?;
            if n == 0 {
                return Err(ConnError::Closed);
            }
            self.frames.push(&self.rbuf[..n]);
        }
    }

    /// The next message from the server.
    pub(crate) async fn next_message(&mut self) -> Result<ServerMessage, ConnError> {
        let frame = self.next_frame().await?;
        Ok(self.codec.decode_server(&frame)?)
    }

    /// Waits for the reply to msgid `id`, skipping pushes and counting stray replies.
    pub(crate) async fn wait_reply(&mut self, id: i64) -> Result<Result<Value, ZeoError>, ConnError> {
        let mut inflight = Inflight::default();
        inflight.insert(id, ());
        loop {
            let msg = self.next_message().await?;
            match inflight.accept(msg) {
                Incoming::Reply { result, .. } => return Ok(result),
                Incoming::Push => {}
                Incoming::Stray(_) => self.strays += 1,
            }
        }
    }

    /// A synchronous call for set-up: an error reply is a [`ConnError::Server`].
    pub(crate) async fn call(&mut self, request: Request) -> Result<Value, ConnError> {
        let method = request.method().map_or("?", |m| m.name());
        let id = self.send_call(request)?;
        self.flush().await?;
        self.wait_reply(id)
            .await?
            .map_err(|e| ConnError::Server { method, class: e.class_path().to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;
    use zeoraid_core::ids::Tid;
    use zeoraid_core::wire::frame::encode_frame;
    use zeoraid_core::wire::push::Push;

    fn reply(id: i64) -> ServerMessage {
        ServerMessage::Reply { msgid: MsgId::int(id), result: Value::Int(i128::from(id) * 10) }
    }

    #[test]
    fn replies_match_their_calls_in_any_order() {
        let mut f = Inflight::default();
        for id in 1..=3 {
            f.insert(id, format!("call {id}"));
        }
        assert_eq!(f.len(), 3);
        assert_eq!(f.accept(reply(2)), Incoming::Reply { tag: "call 2".into(), result: Ok(Value::Int(20)) });
        let push = ServerMessage::Push(Push::InvalidateTransaction { tid: Tid::new(5), oids: vec![] });
        assert_eq!(f.accept(push), Incoming::Push);
        let err = ServerMessage::Error { msgid: MsgId::int(3), error: ZeoError::ReadOnly };
        assert_eq!(f.accept(err), Incoming::Reply { tag: "call 3".into(), result: Err(ZeoError::ReadOnly) });
        assert_eq!(f.accept(reply(1)), Incoming::Reply { tag: "call 1".into(), result: Ok(Value::Int(10)) });
        assert!(f.is_empty());
    }

    #[test]
    fn unknown_and_repeated_msgids_are_strays() {
        let mut f = Inflight::default();
        f.insert(7, ());
        assert_eq!(f.accept(reply(8)), Incoming::Stray(MsgId::int(8)));
        assert!(matches!(f.accept(reply(7)), Incoming::Reply { .. }));
        // Answered already.
        assert_eq!(f.accept(reply(7)), Incoming::Stray(MsgId::int(7)));
        // A tuple msgid (as the Python client uses for loadBefore) matches no int call.
        f.insert(1, ());
        let odd = MsgId(Value::tuple(vec![Value::bytes(Tid::new(1).to_bytes().to_vec())]));
        let msg = ServerMessage::Reply { msgid: odd.clone(), result: Value::None };
        assert_eq!(f.accept(msg), Incoming::Stray(odd));
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn error_kinds_are_short_class_names() {
        assert_eq!(error_kind(&ZeoError::ReadOnly), "ReadOnlyError");
        assert_eq!(error_kind(&ZeoError::ValueError("x".into())), "ValueError");
        let odd = ZeoError::Other { class_path: "NoDots".into(), payload: Value::None };
        assert_eq!(error_kind(&odd), "NoDots");
    }

    /// The server's end of a test connection.
    struct FakeServer {
        io: DuplexStream,
        frames: FrameDecoder,
        codec: Codec,
    }

    impl FakeServer {
        async fn send_raw(&mut self, payload: &[u8]) {
            let mut out = Vec::new();
            encode_frame(payload, &mut out).expect("frame");
            self.io.write_all(&out).await.expect("write");
        }

        async fn send(&mut self, msg: &ServerMessage) {
            let mut payload = Vec::new();
            self.codec.encode_server(msg, &mut payload).expect("encode");
            self.send_raw(&payload).await;
        }

        async fn recv_raw(&mut self) -> bytes::Bytes {
            let mut buf = [0u8; 4096];
            loop {
                if let Some(f) = self.frames.next_frame().expect("frame") {
                    return f;
                }
                let n = self.io.read(&mut buf).await.expect("read");
                assert!(n > 0, "client closed");
                self.frames.push(&buf[..n]);
            }
        }

        async fn recv(&mut self) -> ClientMessage {
            let f = self.recv_raw().await;
            self.codec.decode_client(&f).expect("decode")
        }
    }

    fn pair(encoding: Encoding) -> (Box<dyn Io>, FakeServer) {
        let (client, server) = tokio::io::duplex(1 << 16);
        (
            Box::new(client),
            FakeServer { io: server, frames: FrameDecoder::default(), codec: Codec::new(encoding) },
        )
    }

    #[tokio::test]
    async fn a_call_skips_pushes_and_strays_and_gets_its_reply() {
        let (client, mut srv) = pair(Encoding::Msgpack);
        let server = tokio::spawn(async move {
            srv.send_raw(b"M5").await;
            assert_eq!(&srv.recv_raw().await[..], b"M5");
            let ClientMessage::Async { request: Request::Ping, .. } = srv.recv().await else {
                panic!("expected the async ping first")
            };
            let ClientMessage::Call { msgid, request: Request::Ping } = srv.recv().await else {
                panic!("expected a ping call")
            };
            assert_eq!(msgid, MsgId::int(1));
            srv.send(&ServerMessage::Push(Push::InvalidateTransaction { tid: Tid::new(9), oids: vec![] }))
                .await;
            srv.send(&ServerMessage::Reply { msgid: MsgId::int(77), result: Value::Int(1) }).await;
            srv.send(&ServerMessage::Reply { msgid, result: Value::str_static("pong") }).await;
            let ClientMessage::Call { msgid, .. } = srv.recv().await else {
                panic!("expected a second call")
            };
            assert_eq!(msgid, MsgId::int(2));
            srv.send(&ServerMessage::Error { msgid, error: ZeoError::ReadOnly }).await;
        });
        let mut conn = Conn::handshake(client).await.expect("handshake");
        assert_eq!(conn.encoding(), Encoding::Msgpack);
        conn.send_async(Request::Ping).expect("queued");
        assert_eq!(conn.call(Request::Ping).await.expect("reply"), Value::str_static("pong"));
        assert_eq!(conn.strays, 1);
        let err = conn.call(Request::LastTransaction).await.expect_err("error reply");
        assert!(
            matches!(&err, ConnError::Server { method: "lastTransaction", class } if class.ends_with("ReadOnlyError")),
            "{err}"
        );
        server.await.expect("server");
        // The server is gone: the next call fails (a broken pipe on write), counted as a
        // disconnect.
        let err = conn.call(Request::Ping).await.expect_err("closed");
        assert_eq!(err.kind(), "disconnect", "{err}");
    }

    #[tokio::test]
    async fn the_handshake_copies_the_letter_and_refuses_old_servers() {
        let (client, mut srv) = pair(Encoding::Pickle);
        let server = tokio::spawn(async move {
            srv.send_raw(b"Z5").await;
            srv.recv_raw().await
        });
        let conn = Conn::handshake(client).await.expect("handshake");
        assert_eq!(conn.encoding(), Encoding::Pickle);
        assert_eq!(&server.await.expect("server")[..], b"Z5");

        let (client, mut srv) = pair(Encoding::Pickle);
        srv.send_raw(b"Z4").await;
        assert!(matches!(Conn::handshake(client).await, Err(ConnError::Handshake(_))));
    }
}
