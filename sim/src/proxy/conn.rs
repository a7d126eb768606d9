//! One proxied connection: the client→server pump (learns the encoding and the calls), the
//! server→client pump (matches replies and injects faults), and the graceful close.

use std::io;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::Instrument;
use turmoil::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use turmoil::net::TcpStream;
use zeoraid_core::wire::codec::Codec;
use zeoraid_core::wire::frame::{frame_header, FrameDecoder};
use zeoraid_core::wire::handshake::{parse_client_handshake, parse_server_announcement, ClientHello};
use zeoraid_core::wire::message::{ClientMessage, MsgId, ServerMessage};
use zeoraid_core::wire::reply::Reply;
use zeoraid_core::wire::request::Method;
use zeoraid_core::wire::Encoding;

use super::decide::{decide, CutPoint, ReplyAction};
use super::{FaultKind, FaultLog, InjectedFault, ProxyFaults, DRAIN};

/// What one connection needs besides its sockets.
pub(super) struct Ctx {
    pub(super) conn: u64,
    pub(super) faults: ProxyFaults,
    pub(super) log: FaultLog,
    pub(super) rng: ChaCha8Rng,
}

/// What the client→server pump tells the server→client pump.
#[derive(Debug, Default)]
struct Shared {
    /// The encoding the client's handshake chose.
    encoding: Option<Encoding>,
    /// The client sent `ruok` or a bad handshake: forward bytes without decoding.
    raw: bool,
    /// Calls awaiting a reply: msgid, method (if known), wire name; oldest first.
    pending: Vec<(MsgId, Option<Method>, String)>,
}

/// Why a pump stopped.
#[derive(Debug)]
enum End {
    ClientClosed,
    UpstreamClosed,
    Cut,
    Failed(&'static str, io::Error),
}

/// Serves one accepted connection to its end. Never panics; every error ends the connection.
pub(super) async fn run(client: TcpStream, upstream: String, mut ctx: Ctx) {
    let span = tracing::info_span!("proxy", conn = ctx.conn);
    async move {
        let connect = TcpStream::connect(upstream.as_str());
        let up = match tokio::time::timeout(ctx.faults.connect_timeout, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(%upstream, error = %e, "proxy: upstream connect failed; closing the client");
                return;
            }
            Err(_) => {
                tracing::warn!(%upstream, "proxy: upstream connect timed out; closing the client");
                return;
            }
        };
        let (mut cr, mut cw) = client.into_split();
        let (ur, uw) = up.into_split();
        let shared = Mutex::new(Shared::default());
        let log = ctx.log.clone();
        let end = {
            let s2c = server_to_client(ur, &mut cw, &shared, &mut ctx);
            let c2s = client_to_server(&mut cr, uw, &shared, &log);
            tokio::select! {
                biased;
                e = s2c => e,
                e = c2s => e,
            }
        };
        match &end {
            End::Failed(side, e) => tracing::debug!(side, error = %e, "proxy: connection failed"),
            other => tracing::debug!(end = ?other, "proxy: connection ends"),
        }
        close(cr, cw).await;
    }
    .instrument(span)
    .await;
}

/// Closes the client side: FIN first, then reads (and drops) what the client still sends until
/// it closes or [`DRAIN`] passes, so that no reset overtakes the last forwarded frame.
async fn close(mut cr: OwnedReadHalf, mut cw: OwnedWriteHalf) {
    let _ = cw.shutdown().await;
    let mut buf = [0u8; 4096];
    let drain = async {
        while let Ok(n) = cr.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN, drain).await;
}

async fn write_frame(w: &mut OwnedWriteHalf, payload: &[u8]) -> io::Result<()> {
    let header = frame_header(payload.len()).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    w.write_all(&out).await
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Forwards the client's frames upstream, noting the handshake's encoding and every call that
/// expects a reply.
async fn client_to_server(
    cr: &mut OwnedReadHalf,
    mut uw: OwnedWriteHalf,
    shared: &Mutex<Shared>,
    log: &FaultLog,
) -> End {
    let mut dec = FrameDecoder::new(u32::MAX);
    let mut buf = vec![0u8; 16 * 1024];
    let mut handshake_done = false;
    loop {
        loop {
            let frame = match dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return End::Failed("client framing", io::Error::other(e)),
            };
            if handshake_done {
                note_call(&frame, shared, log);
            } else {
                handshake_done = true;
                let mut s = lock(shared);
                match parse_client_handshake(&frame) {
                    Ok(ClientHello::Protocol(enc)) => s.encoding = Some(enc),
                    Ok(ClientHello::Ruok) => s.raw = true,
                    Err(e) => {
                        tracing::debug!(error = %e, "proxy: bad client handshake, forwarding raw");
                        s.raw = true;
                        log.count_undecodable();
                    }
                }
            }
            if let Err(e) = write_frame(&mut uw, &frame).await {
                return End::Failed("upstream write", e);
            }
        }
        match cr.read(&mut buf).await {
            Ok(0) => return End::ClientClosed,
            Ok(n) => dec.push(&buf[..n]),
            Err(e) => return End::Failed("client read", e),
        }
    }
}

fn note_call(frame: &Bytes, shared: &Mutex<Shared>, log: &FaultLog) {
    let mut s = lock(shared);
    if s.raw {
        return;
    }
    let Some(enc) = s.encoding else { return };
    match Codec::new(enc).decode_client(frame) {
        Ok(ClientMessage::Call { msgid, request }) => {
            s.pending.push((msgid, request.method(), request.name().as_str().to_owned()));
        }
        Ok(ClientMessage::BadCall { msgid, is_async: false, name, .. }) => {
            s.pending.push((msgid, Method::from_name(name.as_str()), name.as_str().to_owned()));
        }
        Ok(ClientMessage::BadCall { .. } | ClientMessage::Async { .. } | ClientMessage::Heartbeat) => {}
        Err(e) => {
            tracing::debug!(error = %e, "proxy: undecodable client frame forwarded");
            log.count_undecodable();
        }
    }
}

/// The server→client pump's state.
struct Down<'a> {
    cw: &'a mut OwnedWriteHalf,
    shared: &'a Mutex<Shared>,
    ctx: &'a mut Ctx,
    announced: Option<Encoding>,
    /// A [`CutPoint::AfterFinish`] is armed: cut at the reply to `tpc_finish`/`tpc_abort`.
    cut_at_finish: bool,
}

/// What to do after a server frame.
enum Next {
    Continue,
    Stop(End),
}

async fn server_to_client(
    mut ur: OwnedReadHalf,
    cw: &mut OwnedWriteHalf,
    shared: &Mutex<Shared>,
    ctx: &mut Ctx,
) -> End {
    let mut down = Down { cw, shared, ctx, announced: None, cut_at_finish: false };
    let mut dec = FrameDecoder::new(u32::MAX);
    let mut buf = vec![0u8; 16 * 1024];
    let mut handshake_done = false;
    loop {
        loop {
            let frame = match dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return End::Failed("upstream framing", io::Error::other(e)),
            };
            let next = if handshake_done {
                down.on_frame(frame).await
            } else {
                handshake_done = true;
                down.announced = parse_server_announcement(&frame).ok();
                if down.announced.is_none() {
                    down.ctx.log.count_undecodable();
                }
                down.forward(&frame).await
            };
            if let Next::Stop(end) = next {
                return end;
            }
        }
        match ur.read(&mut buf).await {
            Ok(0) => return End::UpstreamClosed,
            Ok(n) => dec.push(&buf[..n]),
            Err(e) => return End::Failed("upstream read", e),
        }
    }
}

impl Down<'_> {
    async fn forward(&mut self, payload: &[u8]) -> Next {
        match write_frame(self.cw, payload).await {
            Ok(()) => Next::Continue,
            Err(e) => Next::Stop(End::Failed("client write", e)),
        }
    }

    fn record(&self, kind: FaultKind, method: &str, detail: String) {
        let at = turmoil::sim_elapsed().unwrap_or_default();
        tracing::info!(%kind, method, %detail, "proxy: fault injected");
        self.ctx.log.record(InjectedFault {
            kind,
            conn: self.ctx.conn,
            method: method.to_owned(),
            at,
            detail,
        });
    }

    async fn on_frame(&mut self, frame: Bytes) -> Next {
        let (raw, encoding) = {
            let s = lock(self.shared);
            (s.raw, s.encoding.or(self.announced))
        };
        let Some(encoding) = encoding.filter(|_| !raw) else {
            if !raw {
                self.ctx.log.count_undecodable();
            }
            return self.forward(&frame).await;
        };
        let codec = Codec::new(encoding);
        let (msgid, result) = match codec.decode_server(&frame) {
            Ok(ServerMessage::Push(_)) => return self.forward(&frame).await,
            Ok(ServerMessage::Reply { msgid, result }) => (msgid, Some(result)),
            Ok(ServerMessage::Error { msgid, .. }) => (msgid, None),
            Err(e) => {
                tracing::debug!(error = %e, "proxy: undecodable server frame forwarded");
                self.ctx.log.count_undecodable();
                return self.forward(&frame).await;
            }
        };
        let call = {
            let mut s = lock(self.shared);
            s.pending.iter().position(|(id, _, _)| *id == msgid).map(|i| s.pending.remove(i))
        };
        // A reply to no call the proxy saw is not ours to break.
        let Some((_, method, name)) = call else { return self.forward(&frame).await };
        if self.cut_at_finish && matches!(method, Some(Method::TpcFinish | Method::TpcAbort)) {
            tracing::info!(method = %name, "proxy: cutting the connection instead of answering");
            return Next::Stop(End::Cut);
        }
        let decision = decide(&mut self.ctx.rng, &self.ctx.faults, method, result.as_ref());
        if let Some(delay) = decision.delay {
            self.record(FaultKind::Slow, &name, format!("held {} ms", delay.as_millis()));
            tokio::time::sleep(delay).await;
        }
        let action = decision.action;
        if let Some(kind) = action.kind(method) {
            self.record(kind, &name, action.detail());
        }
        let replacement = match &action {
            ReplyAction::Forward | ReplyAction::Cut(_) => None,
            ReplyAction::Swallow => return Next::Continue,
            ReplyAction::Error(error) => Some(ServerMessage::Error { msgid, error: error.clone() }),
            ReplyAction::WrongTid { to, .. } => {
                let reply = match method {
                    Some(Method::TpcFinish) => Reply::TpcFinish(Some(*to)),
                    _ => Reply::LastTransaction(*to),
                };
                Some(ServerMessage::reply(msgid, &reply))
            }
        };
        let next = match replacement {
            None => self.forward(&frame).await,
            Some(msg) => {
                let mut out = Vec::new();
                match codec.encode_server(&msg, &mut out) {
                    Ok(()) => self.forward(&out).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "proxy: could not encode the replacement; forwarding the reply");
                        self.forward(&frame).await
                    }
                }
            }
        };
        match (next, action) {
            (Next::Continue, ReplyAction::Cut(CutPoint::BeforeFinish)) => Next::Stop(End::Cut),
            (Next::Continue, ReplyAction::Cut(CutPoint::AfterFinish)) => {
                self.cut_at_finish = true;
                Next::Continue
            }
            (next, _) => next,
        }
    }
}
