//! A TCP proxy between one service and a shared backend (PostgreSQL here),
//! so a test can cut that service off without touching the backend others use.
//!
//! Cutting behaves like a network partition seen from the service: the
//! backend side of every connection is closed (the backend rolls back what was
//! open), while the service side stays open and silent, and new connections
//! are accepted but never answered. Restoring closes those silent connections
//! (the service then reconnects) and forwards new ones again.

use std::net::SocketAddr;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running proxy; dropping it stops accepting.
pub struct TcpProxy {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    accepting: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cut, watching) = watch::channel(false);
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, target, watching.clone()));
            }
        });
        Ok(Self {
            addr,
            cut,
            accepting,
        })
    }

    /// Cuts the service off from the backend (see the module docs).
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn serve(mut client: TcpStream, target: SocketAddr, mut cut: watch::Receiver<bool>) {
    if *cut.borrow() {
        // Accepted, never answered; closed once the cut is over.
        let _ = cut.wait_for(|cut| !*cut).await;
        return;
    }
    let Ok(mut backend) = TcpStream::connect(target).await else {
        return;
    };
    let cut_off = tokio::select! {
        _ = copy_bidirectional(&mut client, &mut backend) => false,
        _ = cut.wait_for(|cut| *cut) => true,
    };
    if cut_off {
        drop(backend);
        let _ = cut.wait_for(|cut| !*cut).await;
    }
}
