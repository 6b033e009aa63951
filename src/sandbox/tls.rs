//! TLS for the simulators that must be reached over HTTPS (the Azure SDK sends tokens only
//! over TLS, and its credentials refuse a plain-http authority): one throw-away CA per
//! process, a leaf for `127.0.0.1`/`localhost` signed by it, and the CA's PEM for the
//! connector to trust (`FIDO_CONNECTOR_EXTRA_ROOT_CA`).

use std::sync::OnceLock;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: String,
}

static CA: OnceLock<Result<Ca, String>> = OnceLock::new();

fn ca() -> std::io::Result<&'static Ca> {
    CA.get_or_init(|| {
        let make = || -> Result<Ca, rcgen::Error> {
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "fido-connector sandbox CA");
            let key = KeyPair::generate()?;
            let cert = params.self_signed(&key)?;
            let pem = cert.pem();
            Ok(Ca { cert, key, pem })
        };
        make().map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| std::io::Error::other(e.clone()))
}

/// The sandbox CA certificate (PEM).
pub fn ca_pem() -> std::io::Result<Vec<u8>> {
    Ok(ca()?.pem.clone().into_bytes())
}

/// A server configuration with a fresh leaf certificate for the loopback names.
pub async fn server_config() -> std::io::Result<axum_server::tls_rustls::RustlsConfig> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = ca()?;
    let leaf_key = KeyPair::generate().map_err(std::io::Error::other)?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .and_then(|p| p.signed_by(&leaf_key, &ca.cert, &ca.key))
        .map_err(std::io::Error::other)?;
    axum_server::tls_rustls::RustlsConfig::from_pem(
        leaf.pem().into_bytes(),
        leaf_key.serialize_pem().into_bytes(),
    )
    .await
}
