//! A development CA and one certificate for the whole local cluster, for
//! `make certs` and for tests. Not for production: the CA key sits beside the
//! certificates, and one certificate serves every process.
//!
//! The cluster certificate names every host given (IP addresses become IP
//! SANs) and may be used as a server and as a client certificate, so it works
//! for mutual TLS between coordinators and nodes.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::SecurityError;

/// A CA and a certificate it signed, as PEM text.
#[derive(Clone)]
pub struct DevCerts {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for DevCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevCerts(<keys redacted>)")
    }
}

/// The files [`DevCerts::write`] creates in its directory.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key";
pub const CERT_FILE: &str = "cluster.pem";
pub const KEY_FILE: &str = "cluster.key";

/// The names the local cluster's certificate covers unless told otherwise.
pub const LOCAL_HOSTS: [&str; 3] = ["127.0.0.1", "localhost", "::1"];

impl DevCerts {
    /// A new CA (named `ca_name`) and a certificate for `hosts` signed by it.
    pub fn generate(ca_name: &str, hosts: &[String]) -> Result<DevCerts, SecurityError> {
        let fail = |e: rcgen::Error| SecurityError::Generate(e.to_string());
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, ca_name);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().map_err(fail)?;
        let ca_key_pem = ca_key.serialize_pem();
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(fail)?;

        let mut params = CertificateParams::new(hosts.to_vec()).map_err(fail)?;
        params.distinguished_name.push(DnType::CommonName, "opticache cluster");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(fail)?;
        let cert = params.signed_by(&key, &ca).map_err(fail)?;
        Ok(DevCerts { ca_cert_pem: ca.pem(), ca_key_pem, cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Writes the four files into `dir` (created if needed); keys are readable by the owner only.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, SecurityError> {
        std::fs::create_dir_all(dir).map_err(|source| SecurityError::Write { path: dir.to_path_buf(), source })?;
        let files = [
            (CA_CERT_FILE, &self.ca_cert_pem, false),
            (CA_KEY_FILE, &self.ca_key_pem, true),
            (CERT_FILE, &self.cert_pem, false),
            (KEY_FILE, &self.key_pem, true),
        ];
        let mut written = Vec::new();
        for (name, text, secret) in files {
            let path = dir.join(name);
            write_file(&path, text, secret).map_err(|source| SecurityError::Write { path: path.clone(), source })?;
            written.push(path);
        }
        Ok(written)
    }
}

fn write_file(path: &Path, text: &str, secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mode = if secret { 0o600 } else { 0o644 };
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files_are_pem_and_keys_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let hosts: Vec<String> = LOCAL_HOSTS.iter().map(|h| h.to_string()).collect();
        let certs = DevCerts::generate("test CA", &hosts).unwrap();
        let files = certs.write(dir.path()).unwrap();
        assert_eq!(files.len(), 4);
        for path in &files {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(text.starts_with("-----BEGIN "), "{}", path.display());
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key must not be readable by others");
        assert_ne!(certs.cert_pem, DevCerts::generate("test CA", &hosts).unwrap().cert_pem);
    }
}
