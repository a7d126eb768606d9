//! The tasks of one connection, and the accept loop that starts them.
//!
//! Per connection: a reader (forwards every chunk read as [`Event::Bytes`]; EOF or an error is
//! [`Event::Closed`]) and a writer (writes [`Out::Data`] in order, coalescing what is queued;
//! on [`Out::Close`] writes what was queued before it, shuts the socket down and reports
//! [`Event::Closed`]). The driver stops the reader by dropping [`ConnHandle::stop`] and ends the
//! writer by dropping [`ConnHandle::writer`] (it still writes what was queued). Both run in the
//! connection's span (`conn{id, peer}`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info_span, warn, Instrument, Span};
use zeoraid_core::ids::ConnId;

use super::Event;
use crate::net::{Listener, Net};

/// Bytes read at most per chunk forwarded to the driver.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes coalesced at most into one write.
const WRITE_BATCH: usize = 1024 * 1024;
/// How long a closing connection may take to take its last bytes.
pub(super) const CLOSE_FLUSH: Duration = Duration::from_secs(10);

/// What the driver sends to a connection's writer.
#[derive(Debug)]
pub(crate) enum Out {
    /// Framed bytes to write.
    Data(Bytes),
    /// Write what was queued before, then shut the socket down.
    Close,
}

/// The driver's side of a live connection.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    /// Its span (`conn{id, peer}`).
    pub(crate) span: Span,
    /// The writer's queue.
    pub(crate) writer: mpsc::UnboundedSender<Out>,
    /// Dropped to stop the reader.
    pub(crate) stop: Option<oneshot::Sender<()>>,
    /// The writer task (awaited at exit so that the last frames go out).
    pub(crate) writer_task: JoinHandle<()>,
    /// Bytes queued for the writer and not yet written.
    pub(crate) queued: Arc<AtomicUsize>,
}

/// Accepts connections on `listener` until aborted; a failed accept is logged and retried
/// after a short pause (it is usually a lack of file descriptors).
pub(crate) async fn accept_loop<N: Net>(
    mut listener: N::Listener,
    events: mpsc::UnboundedSender<Event>,
    ids: Arc<AtomicU64>,
) {
    let addr = listener.local_addr();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let conn = ConnId(ids.fetch_add(1, Ordering::Relaxed));
                N::spawn(serve_conn::<N, _>(stream, conn, peer, events.clone()));
            }
            Err(e) => {
                warn!("accept on {addr} failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Announces the connection to the driver, then runs its reader (and spawns its writer).
async fn serve_conn<N, S>(stream: S, conn: ConnId, peer: String, events: mpsc::UnboundedSender<Event>)
where
    N: Net,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let span = info_span!("conn", id = conn.0, peer = %peer);
    let (rd, wr) = tokio::io::split(stream);
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let writer_task =
        N::spawn(write_loop(wr, out_rx, conn, events.clone(), Arc::clone(&queued)).instrument(span.clone()));
    let handle = ConnHandle { span: span.clone(), writer: out_tx, stop: Some(stop_tx), writer_task, queued };
    // Sent before the reader starts, so that the driver knows the connection before its bytes.
    if events.send(Event::Connected { conn, peer, handle }).is_err() {
        return; // the driver is gone
    }
    read_loop(rd, stop_rx, conn, events).instrument(span).await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    mut stop: oneshot::Receiver<()>,
    conn: ConnId,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        buf.reserve(READ_CHUNK);
        let n = tokio::select! {
            biased;
            _ = &mut stop => return, // the driver closes or forgot the connection
            r = rd.read_buf(&mut buf) => r,
        };
        match n {
            Ok(0) => {
                debug!("end of stream");
                break;
            }
            Ok(_) => {
                if events.send(Event::Bytes { conn, data: buf.split().freeze() }).is_err() {
                    return;
                }
            }
            Err(e) => {
                debug!("read failed: {e}");
                break;
            }
        }
    }
    let _ = events.send(Event::Closed { conn });
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<Out>,
    conn: ConnId,
    events: mpsc::UnboundedSender<Event>,
    queued: Arc<AtomicUsize>,
) {
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        let Some(first) = rx.recv().await else {
            // The driver forgot the connection (and everything queued has been written).
            let _ = wr.shutdown().await;
            return;
        };
        let mut closing = false;
        let mut size = 0usize;
        let mut next = Some(first);
        while let Some(out) = next.take() {
            match out {
                Out::Data(b) => {
                    size += b.len();
                    batch.push(b);
                }
                Out::Close => {
                    closing = true;
                    break;
                }
            }
            if size < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        let written = if closing {
            match tokio::time::timeout(CLOSE_FLUSH, write_batch(&mut wr, &mut batch)).await {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the peer does not read")),
            }
        } else {
            write_batch(&mut wr, &mut batch).await
        };
        if let Err(e) = written {
            debug!("write failed: {e}");
            let _ = events.send(Event::Closed { conn });
            return;
        }
        queued.fetch_sub(size.min(queued.load(Ordering::Relaxed)), Ordering::Relaxed);
        if closing {
            let _ = tokio::time::timeout(CLOSE_FLUSH, wr.shutdown()).await;
            let _ = events.send(Event::Closed { conn });
            return;
        }
    }
}

/// Writes and empties `batch` (one buffer as is; several copied into one write).
async fn write_batch<W: AsyncWrite + Unpin>(wr: &mut W, batch: &mut Vec<Bytes>) -> std::io::Result<()> {
    match batch.as_slice() {
        [] => {}
        [one] => wr.write_all(one).await?,
        many => {
            let mut all = BytesMut::with_capacity(many.iter().map(Bytes::len).sum());
            for b in many {
                all.extend_from_slice(b);
            }
            wr.write_all(&all).await?;
        }
    }
    batch.clear();
    wr.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn close_writes_what_was_queued_then_shuts_down_and_reports() {
        let (ours, mut theirs) = tokio::io::duplex(16); // small: the writes must wait for reads
        let (tx, rx) = mpsc::unbounded_channel();
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        for chunk in [&b"first "[..], b"second ", b"third"] {
            tx.send(Out::Data(Bytes::copy_from_slice(chunk))).expect("queue");
        }
        tx.send(Out::Close).expect("queue");
        tx.send(Out::Data(Bytes::from_static(b"after close"))).expect("queue");
        let task = tokio::spawn(write_loop(ours, rx, ConnId(3), ev_tx, Arc::new(AtomicUsize::new(0))));
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).await.expect("read to the shutdown");
        assert_eq!(got, b"first second third");
        task.await.expect("writer ends");
        assert!(matches!(ev_rx.recv().await, Some(Event::Closed { conn: ConnId(3) })));
    }

    #[tokio::test]
    async fn reader_forwards_chunks_and_reports_the_end() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        let (_stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(read_loop(ours, stop_rx, ConnId(5), ev_tx));
        theirs.write_all(b"abc").await.expect("write");
        let Some(Event::Bytes { conn: ConnId(5), data }) = ev_rx.recv().await else {
            panic!("bytes expected")
        };
        assert_eq!(&data[..], b"abc");
        drop(theirs);
        assert!(matches!(ev_rx.recv().await, Some(Event::Closed { conn: ConnId(5) })));
        task.await.expect("reader ends");
    }

    #[tokio::test]
    async fn a_stopped_reader_reports_nothing() {
        let (ours, _theirs) = tokio::io::duplex(1024);
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(read_loop(ours, stop_rx, ConnId(6), ev_tx));
        drop(stop_tx);
        task.await.expect("reader ends");
        assert!(ev_rx.recv().await.is_none(), "no event after a stop");
    }
}
