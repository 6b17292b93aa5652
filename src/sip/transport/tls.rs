//! TLS server configuration (rustls) for the TLS and WSS listeners.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("sip.tls_cert: cannot read {path}")]
    ReadCert {
        path: String,
        source: std::io::Error,
    },
    #[error("sip.tls_key: cannot read {path}")]
    ReadKey {
        path: String,
        source: std::io::Error,
    },
    #[error("sip.tls_cert: no certificate found in {0}")]
    NoCert(String),
    #[error("sip.tls_key: no private key found in {0}")]
    NoKey(String),
    #[error("sip.tls_cert: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds an acceptor from PEM files. TLS 1.2 and 1.3 only, ring provider, no client auth.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let cert_pem = std::fs::read(cert).map_err(|source| TlsError::ReadCert {
        path: cert.display().to_string(),
        source,
    })?;
    let key_pem = std::fs::read(key).map_err(|source| TlsError::ReadKey {
        path: key.display().to_string(),
        source,
    })?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::ReadCert {
            path: cert.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(cert.display().to_string()));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|source| TlsError::ReadKey {
            path: key.display().to_string(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey(key.display().to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
