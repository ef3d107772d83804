//! A throwaway PKI for TLS tests: CAs made here, and leaf certificates for `localhost` and
//! 127.0.0.1 (server and client use), written as PEM files into a temp dir of its own.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};

/// A CA that signs leaves.
pub type Ca = CertifiedIssuer<'static, KeyPair>;

/// Where the PEM files go.
pub struct Pki {
    /// The temp dir holding every file.
    pub dir: tempfile::TempDir,
}

impl Default for Pki {
    fn default() -> Pki {
        Pki::new()
    }
}

impl Pki {
    /// A fresh temp dir.
    ///
    /// # Panics
    /// When no temp dir can be made.
    pub fn new() -> Pki {
        Pki { dir: tempfile::tempdir().expect("pki dir") }
    }

    /// A new self-signed CA named `name`.
    ///
    /// # Panics
    /// When rcgen fails (it does not for these parameters).
    pub fn ca(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        CertifiedIssuer::self_signed(p, KeyPair::generate().expect("key")).expect("ca")
    }

    /// Writes `ca`'s certificate as `<name>.pem`.
    ///
    /// # Panics
    /// When the file cannot be written.
    pub fn write_ca(&self, ca: &Ca, name: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.pem"));
        std::fs::write(&path, ca.pem()).expect("ca file");
        path
    }

    /// Writes `<name>.pem` and `<name>.key`, a leaf for localhost and 127.0.0.1 (server and
    /// client use) signed by `ca`.
    ///
    /// # Panics
    /// When rcgen fails or a file cannot be written.
    pub fn leaf(&self, ca: &Ca, name: &str) -> (PathBuf, PathBuf) {
        let mut p = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        p.subject_alt_names.push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, ca).expect("sign");
        let (c, k) = (self.dir.path().join(format!("{name}.pem")), self.dir.path().join(format!("{name}.key")));
        std::fs::write(&c, cert.pem()).expect("cert");
        std::fs::write(&k, key.serialize_pem()).expect("key");
        (c, k)
    }
}
