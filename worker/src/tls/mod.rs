//! Optional mutual TLS for both planes: the coordinator–worker sessions (ractor_cluster's TLS
//! streams) and the gradient ring (collective/tcp_tls.rs). One identity per process, from
//! `--tls-cert`, `--tls-key` and `--tls-ca` (PEM files, e.g. a Kubernetes Secret):
//!
//! * every end presents its certificate and checks the other's: a peer must hold a key whose
//!   certificate the CA in `--tls-ca` signed, or the connection is refused during the handshake;
//! * names are not checked: ring peers are reached by pod IP and the coordinator by a Service name,
//!   so the CA is the membership — it should sign certificates for one deployment only;
//! * TLS 1.3 only, with rustls's aws-lc-rs provider (already built for ractor_cluster).
//!
//! The cluster cookie is still checked on top (ractor_cluster's handshake, the ring's HMAC): TLS
//! adds confidentiality and integrity of what travels, and a second credential.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

#[cfg(test)]
pub(crate) mod test_pki;
#[cfg(test)]
mod tests;
mod verify;

/// The name a client asks for; certificates need not carry it (names are not checked).
const SERVER_NAME: &str = "d2nn";

/// Where a process's TLS identity and trust come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: this process's certificate, then any intermediates.
    pub cert: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM: the CA certificate(s) a peer's certificate must chain to.
    pub ca: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{flag} {}: cannot read: {message}", path.display())]
    Unreadable { flag: &'static str, path: PathBuf, message: String },
    #[error("{flag} {}: {problem}", path.display())]
    BadFile { flag: &'static str, path: PathBuf, problem: String },
    #[error("TLS: {0}")]
    Config(String),
}

/// Both ends' rustls configurations for one identity; cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    /// What the identity was loaded from, for logs.
    origin: String,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsConfig({})", self.origin)
    }
}

/// Two configurations are the same when they are the same loaded identity.
impl PartialEq for TlsConfig {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.client, &other.client) && Arc::ptr_eq(&self.server, &other.server)
    }
}

impl Eq for TlsConfig {}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Unreadable { flag, path: path.to_path_buf(), message: e.to_string() })
}

fn bad(flag: &'static str, path: &Path, problem: impl Into<String>) -> TlsError {
    TlsError::BadFile { flag, path: path.to_path_buf(), problem: problem.into() }
}

/// Every certificate of a PEM file; none is an error naming the flag.
fn certificates(flag: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(flag, path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad(flag, path, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(certs)
}

impl TlsConfig {
    /// Loads the three files; each problem names its flag and file.
    pub fn load(files: &TlsFiles) -> Result<TlsConfig, TlsError> {
        let (cert, key, ca) =
            (read("--tls-cert", &files.cert)?, read("--tls-key", &files.key)?, read("--tls-ca", &files.ca)?);
        let chain = certificates("--tls-cert", &files.cert, &cert)?;
        let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
            bad("--tls-key", &files.key, format!("holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"))
        })?;
        let cas = certificates("--tls-ca", &files.ca, &ca)?;
        let mut roots = RootCertStore::empty();
        for ca in cas {
            roots.add(ca).map_err(|e| bad("--tls-ca", &files.ca, format!("not a usable CA certificate: {e}")))?;
        }
        let origin = format!("cert {}, CA {}", files.cert.display(), files.ca.display());
        Self::build(chain, key, roots, origin).map_err(|e| match e {
            // The only per-file problem left is a key that does not match the certificate.
            TlsError::Config(message) => bad(
                "--tls-key",
                &files.key,
                format!("does not make a usable identity with --tls-cert {}: {message}", files.cert.display()),
            ),
            other => other,
        })
    }

    /// From PEM text already in memory (tests, tools).
    pub fn from_pem(cert: &str, key: &str, ca: &str) -> Result<TlsConfig, TlsError> {
        let in_memory = Path::new("<memory>");
        let chain = certificates("cert", in_memory, cert.as_bytes())?;
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
            .map_err(|e| bad("key", in_memory, format!("no PEM private key: {e}")))?;
        let mut roots = RootCertStore::empty();
        for ca in certificates("ca", in_memory, ca.as_bytes())? {
            roots.add(ca).map_err(|e| TlsError::Config(format!("CA: {e}")))?;
        }
        Self::build(chain, key, roots, "in-memory PEM".into())
    }

    fn build(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        roots: RootCertStore,
        origin: String,
    ) -> Result<TlsConfig, TlsError> {
        let config = |e: rustls::Error| TlsError::Config(e.to_string());
        let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let roots = Arc::new(roots);
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config)?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(config)?;
        // No session resumption: every connection proves its certificate afresh, and a ring link
        // that only sends never has unread tickets queued.
        server.send_tls13_tickets = 0;
        let server_verifier = verify::SignedByCa::new(roots, &provider);
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(server_verifier))
            .with_client_auth_cert(chain, key)
            .map_err(config)?;
        client.enable_sni = false;
        Ok(TlsConfig { client: Arc::new(client), server: Arc::new(server), origin })
    }

    pub fn client(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }

    pub fn server(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// The name a client connects to (not checked against certificates).
    pub fn server_name() -> ServerName<'static> {
        ServerName::try_from(SERVER_NAME)
            .unwrap_or_else(|_| ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()))
    }
}

/// An operator's reading of a TLS failure: which side's certificate was refused, and the flag that
/// fixes it.
pub fn explain(e: &rustls::Error) -> String {
    use rustls::{AlertDescription as Alert, Error};
    match e {
        Error::InvalidCertificate(why) => format!(
            "TLS: the peer's certificate is refused ({why:?}): it must be signed by the CA in this \
             process's --tls-ca"
        ),
        Error::NoCertificatesPresented => "TLS: the peer presented no certificate (is TLS on at both ends?)".into(),
        Error::AlertReceived(
            alert @ (Alert::UnknownCA
            | Alert::BadCertificate
            | Alert::CertificateUnknown
            | Alert::CertificateRequired
            | Alert::CertificateExpired
            | Alert::CertificateRevoked
            | Alert::UnsupportedCertificate
            | Alert::AccessDenied),
        ) => format!(
            "TLS: the peer refused this process's certificate ({alert:?}): --tls-cert must be signed by \
             the CA the peer trusts (its --tls-ca)"
        ),
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } | Error::InappropriateHandshakeMessage { .. } => {
            format!("TLS: the peer does not speak TLS 1.3 ({e}); is TLS on at both ends?")
        }
        other => format!("TLS: {other}"),
    }
}

/// [`explain`] for an I/O error that carries a rustls error (as tokio-rustls and rustls's own
/// streams return them); None for any other I/O error.
pub fn explain_io(e: &std::io::Error) -> Option<String> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).map(explain)
}
