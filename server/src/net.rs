//! The network the driver runs on: binding listeners and accepting byte streams.
//!
//! The driver is generic over [`Net`] so that the same code serves real sockets ([`TokioNet`]:
//! TCP and unix-domain sockets) and, in the simulation, turmoil's simulated TCP (whose
//! `TcpListener::bind`/`accept` and `TcpStream` have the same shape). The trait is kept to what
//! the driver needs: bind, accept, a label for the peer, the wall clock, connecting to a
//! remote backend, and starting a task.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;

use crate::backend::remote::RemoteAddr;
use crate::config::ListenAddr;

/// A network: where listeners come from, and the wall clock tids are taken from.
pub trait Net: Send + Sync + 'static {
    /// A bound listener.
    type Listener: Listener;

    /// An outgoing connection.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Binds `addr`.
    fn bind(&self, addr: &ListenAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// Connects to a remote ZEO server (TCP with `TCP_NODELAY`, or a unix-domain socket).
    fn connect(&self, addr: &RemoteAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// Wall-clock time since the Unix epoch (real time here; simulated time in turmoil).
    fn wall_clock(&self) -> Duration {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
    }

    /// Starts one of the driver's tasks (acceptors, connections, backend connectors, state
    /// savers). Real servers use `tokio::spawn`. The simulation keeps every task of a host on
    /// that host's local set: when the host crashes its tasks, and with them its sockets, are
    /// dropped in the order they were spawned; tokio's own task list drops them in an order
    /// that follows process-wide task numbers, so a world on another thread would change it.
    fn spawn<F>(task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tokio::spawn(task)
    }
}

/// A bound listener.
pub trait Listener: Send + 'static {
    /// An accepted connection.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The address actually bound (with the real port when 0 was asked for).
    fn local_addr(&self) -> String;

    /// The next connection and a label for its peer (for logs).
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, String)>> + Send;
}

/// How long a TCP connection may be idle before keepalive probes start.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Between two keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes after which the connection is dead.
pub const KEEPALIVE_PROBES: u32 = 6;

/// Turns TCP keepalive on for `s`: a peer whose machine died or was cut off (no FIN, no RST
/// ever comes) is found dead after [`KEEPALIVE_IDLE`] + [`KEEPALIVE_PROBES`] ×
/// [`KEEPALIVE_INTERVAL`] (two minutes) instead of never, so that its connection is closed and
/// what it held is released — above all the commit lock of a transaction it had voted (found by
/// the simulation suite: a RAID front that crashed while voting kept a backend zeoraid's commit
/// lock, and every later commit on that backend timed out). Failing to set it is only logged.
fn keepalive(s: &tokio::net::TcpStream, peer: &dyn std::fmt::Display) {
    #[cfg(unix)]
    {
        use rustix::net::sockopt;
        let on = sockopt::set_socket_keepalive(s, true);
        #[cfg(target_os = "linux")]
        let on = on
            .and_then(|()| sockopt::set_tcp_keepidle(s, KEEPALIVE_IDLE))
            .and_then(|()| sockopt::set_tcp_keepintvl(s, KEEPALIVE_INTERVAL))
            .and_then(|()| sockopt::set_tcp_keepcnt(s, KEEPALIVE_PROBES));
        if let Err(e) = on {
            tracing::debug!("TCP keepalive on {peer}: {e}");
        }
    }
    #[cfg(not(unix))]
    let _ = (s, peer);
}

/// Real sockets: tokio TCP and unix-domain sockets.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioNet;

/// A tokio listener, TCP or unix.
#[derive(Debug)]
pub enum TokioListener {
    /// TCP.
    Tcp(tokio::net::TcpListener),
    /// A unix-domain socket; the socket file is removed when this is dropped.
    #[cfg(unix)]
    Unix(tokio::net::UnixListener, SocketFile),
}

/// A unix socket file that this process created; removed on drop.
#[derive(Debug)]
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!("cannot remove socket {}: {e}", self.0.display());
            }
        }
    }
}

/// A tokio stream, TCP or unix.
#[derive(Debug)]
pub enum TokioStream {
    /// TCP.
    Tcp(tokio::net::TcpStream),
    /// Unix-domain.
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

impl Net for TokioNet {
    type Listener = TokioListener;
    type Stream = TokioStream;

    async fn connect(&self, addr: &RemoteAddr) -> io::Result<TokioStream> {
        match addr {
            RemoteAddr::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a)
                    .await
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {a}: {e}")))?;
                if let Err(e) = s.set_nodelay(true) {
                    tracing::debug!("TCP_NODELAY to {a}: {e}");
                }
                keepalive(&s, a);
                Ok(TokioStream::Tcp(s))
            }
            #[cfg(unix)]
            RemoteAddr::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p).await.map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot connect to unix:{}: {e}", p.display()))
                })?;
                Ok(TokioStream::Unix(s))
            }
            #[cfg(not(unix))]
            RemoteAddr::Unix(p) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("unix:{}: no unix sockets here", p.display()),
            )),
        }
    }

    async fn bind(&self, addr: &ListenAddr) -> io::Result<TokioListener> {
        match addr {
            ListenAddr::Tcp(a) => {
                let l = tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {a}: {e}")))?;
                Ok(TokioListener::Tcp(l))
            }
            #[cfg(unix)]
            ListenAddr::Unix(p) => bind_unix(p).await,
            #[cfg(not(unix))]
            ListenAddr::Unix(p) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("unix:{}: no unix sockets here", p.display()),
            )),
        }
    }
}

/// Binds a unix socket: a stale socket file (nobody accepting on it) is removed first, a live
/// one or any other file is an error; the new socket is made owner-only (0600).
#[cfg(unix)]
async fn bind_unix(path: &Path) -> io::Result<TokioListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("cannot listen on unix:{shown}: another server is accepting on it"),
                ));
            }
            tracing::info!("removing stale socket unix:{shown}");
            std::fs::remove_file(path).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot remove stale socket unix:{shown}: {e}"))
            })?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("cannot listen on unix:{shown}: the file exists and is not a socket"),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("cannot listen on unix:{shown}: {e}"))),
    }
    let l = tokio::net::UnixListener::bind(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on unix:{shown}: {e}")))?;
    let file = SocketFile(path.to_path_buf());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io::Error::new(e.kind(), format!("cannot restrict unix:{shown} to its owner: {e}")))?;
    Ok(TokioListener::Unix(l, file))
}

impl Listener for TokioListener {
    type Stream = TokioStream;

    fn local_addr(&self) -> String {
        match self {
            TokioListener::Tcp(l) => {
                l.local_addr().map_or_else(|e| format!("tcp (unknown address: {e})"), |a| a.to_string())
            }
            #[cfg(unix)]
            TokioListener::Unix(_, f) => format!("unix:{}", f.0.display()),
        }
    }

    async fn accept(&mut self) -> io::Result<(TokioStream, String)> {
        match self {
            TokioListener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                if let Err(e) = s.set_nodelay(true) {
                    tracing::debug!("TCP_NODELAY on {peer}: {e}");
                }
                keepalive(&s, &peer);
                Ok((TokioStream::Tcp(s), peer.to_string()))
            }
            #[cfg(unix)]
            TokioListener::Unix(l, f) => {
                let (s, _) = l.accept().await?;
                Ok((TokioStream::Unix(s), format!("unix:{}", f.0.display())))
            }
        }
    }
}

impl AsyncRead for TokioStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TokioStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(unix)]
            TokioStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TokioStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TokioStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(unix)]
            TokioStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TokioStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(unix)]
            TokioStream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            TokioStream::Tcp(s) => s.is_write_vectored(),
            #[cfg(unix)]
            TokioStream::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TokioStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            #[cfg(unix)]
            TokioStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TokioStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(unix)]
            TokioStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn tcp_binds_port_zero_and_reports_the_real_port() {
        let mut l = TokioNet.bind(&"127.0.0.1:0".parse().expect("addr")).await.expect("bind");
        let addr = l.local_addr();
        assert!(!addr.ends_with(":0"), "{addr}");
        let mut c = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        let (mut s, peer) = l.accept().await.expect("accept");
        assert!(peer.starts_with("127.0.0.1:"), "{peer}");
        // Keepalive is on, so a peer that dies silently does not hold its connection forever.
        #[cfg(unix)]
        {
            let TokioStream::Tcp(tcp) = &s else { panic!("a TCP listener gave a unix stream") };
            assert!(rustix::net::sockopt::socket_keepalive(tcp).expect("SO_KEEPALIVE"));
            #[cfg(target_os = "linux")]
            assert_eq!(rustix::net::sockopt::tcp_keepidle(tcp).expect("TCP_KEEPIDLE"), KEEPALIVE_IDLE);
        }
        s.write_all(b"hi").await.expect("write");
        let mut buf = [0u8; 2];
        c.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"hi");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn unix_socket_is_owner_only_replaces_a_stale_one_and_is_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("zeo.sock");
        let addr = ListenAddr::Unix(path.clone());
        // A stale socket: bound by a std listener that was dropped without removing it.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("stale"));
        assert!(path.exists());
        let mut l = TokioNet.bind(&addr).await.expect("bind over a stale socket");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A live socket is not taken over.
        let err = TokioNet.bind(&addr).await.expect_err("live");
        assert!(err.to_string().contains("another server"), "{err}");
        // The probe of that second bind was a connection: it is accepted and at its end.
        let (mut probe, _) = l.accept().await.expect("accept the probe");
        assert_eq!(probe.read(&mut [0u8; 1]).await.expect("read"), 0);
        let mut c = tokio::net::UnixStream::connect(&path).await.expect("connect");
        let (mut s, _) = l.accept().await.expect("accept");
        s.write_all(b"ok").await.expect("write");
        let mut buf = [0u8; 2];
        c.read_exact(&mut buf).await.expect("read");
        drop(l);
        assert!(!path.exists(), "the socket file is removed with the listener");
        // A regular file in the way is never removed.
        std::fs::write(&path, b"data").expect("write");
        let err = TokioNet.bind(&addr).await.expect_err("regular file");
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&path).expect("read"), b"data");
    }
}
