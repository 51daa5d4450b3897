//! Certificates for tests: a fresh CA and identities it signs (rcgen), as PEM text or files.
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use super::{TlsConfig, TlsFiles};

/// A certificate authority made for one test.
pub(crate) struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// One identity: a certificate the CA signed, its key, and the CA's certificate to trust.
pub(crate) struct TestIdentity {
    pub cert: String,
    pub key: String,
    pub ca: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        TestCa { issuer: CertifiedIssuer::self_signed(params, key).expect("self-signed CA") }
    }

    pub fn identity(&self, name: &str) -> TestIdentity {
        let mut params = CertificateParams::new(vec![name.to_string()]).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed leaf");
        TestIdentity { cert: cert.pem(), key: key.serialize_pem(), ca: self.issuer.pem() }
    }
}

impl TestIdentity {
    pub fn config(&self) -> TlsConfig {
        TlsConfig::from_pem(&self.cert, &self.key, &self.ca).expect("a test identity loads")
    }

    /// The three PEM files in `dir`, named after `name`.
    pub fn write(&self, dir: &Path, name: &str) -> TlsFiles {
        let file = |what: &str, text: &str| -> PathBuf {
            let path = dir.join(format!("{name}.{what}.pem"));
            std::fs::write(&path, text).expect("writing a test PEM file");
            path
        };
        TlsFiles { cert: file("cert", &self.cert), key: file("key", &self.key), ca: file("ca", &self.ca) }
    }
}
