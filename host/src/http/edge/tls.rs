//! `[server.tls]`: the certificate and key, loaded once at start-up into a
//! rustls acceptor (ring provider) offering HTTP/2 and HTTP/1.1 by ALPN.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Why the server cannot serve TLS with the configured files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file cannot be read or holds no PEM certificate.
    #[error("server.tls.cert_path {path}: {problem}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The key file cannot be read or holds no PEM private key.
    #[error("server.tls.key_path {path}: {problem}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("server.tls: the certificate and key cannot be used together: {0}")]
    Rejected(#[from] rustls::Error),
}

/// The acceptor for `config`'s certificate chain and key.
pub(super) fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let chain = certificates(&config.cert_path)?;
    let key = PrivateKeyDer::from_pem_file(&config.key_path).map_err(|e| TlsError::Key {
        path: config.key_path.clone(),
        problem: pem_problem(&config.key_path, &e, "private key"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let problem = |problem: String| TlsError::Certificate { path: path.to_path_buf(), problem };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| problem(pem_problem(path, &e, "certificate")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(pem_problem(path, &e, "certificate")))?;
    if chain.is_empty() {
        return Err(problem("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_string()));
    }
    Ok(chain)
}

/// A sentence for a PEM failure: a missing file reads as such.
fn pem_problem(path: &Path, error: &rustls::pki_types::pem::Error, what: &str) -> String {
    use rustls::pki_types::pem::Error;
    match error {
        Error::Io(io) => format!("cannot be read: {io}"),
        Error::NoItemsFound => format!("holds no PEM {what}"),
        other => format!("is not a valid PEM {what} ({other:?}) in {}", path.display()),
    }
}
