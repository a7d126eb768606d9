//! [`SimNet`]: the production driver's [`Net`] on turmoil's simulated TCP.
//!
//! Listeners and streams are turmoil's; the wall clock is turmoil's simulated time since the
//! world's fixed epoch ([`EPOCH_SECS`]), never the real clock. Unix-domain addresses do not
//! exist in a simulated world: binding or connecting one fails with `Unsupported`. Tasks run on
//! the host's local set.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use zeoraid_server::backend::remote::RemoteAddr;
use zeoraid_server::config::ListenAddr;
use zeoraid_server::net::{Listener, Net};

/// The simulated wall clock's origin, seconds since the Unix epoch (2023-11-14).
pub const EPOCH_SECS: u64 = 1_700_000_000;

/// How long a connect may take before it is given up (turmoil connects can hang while a link
/// is held).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// turmoil's network, for the driver, and the host's wall clock.
#[derive(Debug, Clone, Default)]
pub struct SimNet {
    /// How far the host's wall clock was stepped back (milliseconds; `None`: never).
    back: Option<Arc<AtomicU64>>,
}

impl SimNet {
    /// A network whose wall clock runs `back` milliseconds behind simulated time (the nemesis
    /// steps it back, as a wrong NTP correction or a replaced machine would).
    pub fn with_clock(back: Arc<AtomicU64>) -> SimNet {
        SimNet { back: Some(back) }
    }
}

/// A bound simulated listener.
pub struct SimListener(turmoil::net::TcpListener, SocketAddr);

impl std::fmt::Debug for SimListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimListener({})", self.1)
    }
}

fn unsupported(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, format!("{what}: no unix sockets in a simulation"))
}

impl Net for SimNet {
    type Listener = SimListener;
    type Stream = turmoil::net::TcpStream;

    async fn bind(&self, addr: &ListenAddr) -> io::Result<SimListener> {
        match addr {
            ListenAddr::Tcp(a) => {
                let l = turmoil::net::TcpListener::bind(*a).await?;
                let local = l.local_addr()?;
                Ok(SimListener(l, local))
            }
            ListenAddr::Unix(p) => Err(unsupported(format!("unix:{}", p.display()))),
        }
    }

    async fn connect(&self, addr: &RemoteAddr) -> io::Result<turmoil::net::TcpStream> {
        match addr {
            RemoteAddr::Tcp(a) => {
                match tokio::time::timeout(CONNECT_TIMEOUT, turmoil::net::TcpStream::connect(*a)).await {
                    Ok(r) => r.map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {a}: {e}"))),
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("cannot connect to {a}: timed out"),
                    )),
                }
            }
            RemoteAddr::Unix(p) => Err(unsupported(format!("unix:{}", p.display()))),
        }
    }

    fn wall_clock(&self) -> Duration {
        let back = self.back.as_ref().map_or(0, |b| b.load(Ordering::Relaxed));
        wall_clock().saturating_sub(Duration::from_millis(back))
    }

    /// On the host's local set (turmoil runs each host's software in one), so that a crash
    /// drops the host's tasks in spawn order whatever else runs in the process (why: [`Net::spawn`]).
    fn spawn<F>(task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tokio::task::spawn_local(task)
    }
}

/// Simulated time since the Unix epoch (the epoch itself outside a simulation).
pub fn wall_clock() -> Duration {
    Duration::from_secs(EPOCH_SECS) + turmoil::sim_elapsed().unwrap_or_default()
}

impl Listener for SimListener {
    type Stream = turmoil::net::TcpStream;

    fn local_addr(&self) -> String {
        self.1.to_string()
    }

    async fn accept(&mut self) -> io::Result<(turmoil::net::TcpStream, String)> {
        let (s, peer) = self.0.accept().await?;
        let name = turmoil::reverse_lookup(peer.ip()).unwrap_or_else(|| peer.ip().to_string());
        Ok((s, format!("{name}:{}", peer.port())))
    }
}
