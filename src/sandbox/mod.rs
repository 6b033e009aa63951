//! Simulators of every upstream, speaking the real protocols over real HTTP on loopback
//! with the real cryptography. Feature `sandbox`; not in the production image.

pub mod authenticator;
pub mod entra;
pub mod faults;
pub mod keyvault;
pub mod mail;
pub mod okta;
pub mod run;
pub mod tls;
pub mod webauthn;
pub mod webhook;
pub mod ye;

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A simulator serving on a loopback port until dropped.
pub struct Served {
    pub addr: SocketAddr,
    tls: bool,
    task: JoinHandle<()>,
}

impl Served {
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
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
    Ok(Served {
        addr,
        tls: false,
        task,
    })
}

/// Serves `router` over HTTPS on `127.0.0.1:port` with a certificate of the sandbox CA
/// ([`tls::ca_pem`]).
pub async fn serve_tls(router: Router, port: u16) -> std::io::Result<Served> {
    serve_tls_on(std::net::TcpListener::bind(("127.0.0.1", port))?, router).await
}

/// [`serve_tls`] on a bound listener (when the router must know its own address first).
pub async fn serve_tls_on(
    listener: std::net::TcpListener,
    router: Router,
) -> std::io::Result<Served> {
    let config = tls::server_config().await?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let server = axum_server::from_tcp_rustls(listener, config);
    let task = tokio::spawn(async move {
        let _ = server.serve(router.into_make_service()).await;
    });
    Ok(Served {
        addr,
        tls: true,
        task,
    })
}
