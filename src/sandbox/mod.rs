//! Simulators of every upstream, speaking the real protocols over real HTTP on loopback
//! with the real cryptography. Feature `sandbox`; not in the production image.

pub mod authenticator;
pub mod entra;
pub mod faults;
pub mod keyvault;
pub mod mail;
pub mod run;
pub mod webauthn;
pub mod ye;

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A simulator serving on a loopback port until dropped.
pub struct Served {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Served {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `router` on `127.0.0.1:port` (0 = any free port).
pub async fn serve(router: Router, port: u16) -> std::io::Result<Served> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(Served { addr, task })
}
