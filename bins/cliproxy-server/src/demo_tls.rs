//! `demo --tls`: a throwaway certificate authority and a certificate for 127.0.0.1 and
//! localhost, so the demo can show the TLS listener without an operator's certificate. The
//! CA's key is never written; the files live in the demo's directory and go with it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The files `demo --tls` serves with, and the CA a client must trust.
pub(crate) struct DemoCertificate {
    pub(crate) ca_file: PathBuf,
    pub(crate) cert_file: PathBuf,
    pub(crate) key_file: PathBuf,
}

/// Makes the CA and the server certificate in `dir` (created 0700).
pub(crate) fn create(dir: &Path) -> Result<DemoCertificate> {
    // 0700 whatever the umask: the directory holds the server's private key, and the demo
    // prints its path.
    cliproxy_core::private_fs::create_new_dir(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("demo CA")?;
    ca.distinguished_name.push(DnType::CommonName, "cliproxy demo CA (throwaway)");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().context("demo CA key")?;
    let ca_cert = ca.self_signed(&ca_key).context("demo CA certificate")?;
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .context("demo server certificate")?;
    leaf.distinguished_name.push(DnType::CommonName, "cliproxy demo");
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().context("demo server key")?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).context("signing the demo certificate")?;

    let files = DemoCertificate {
        ca_file: dir.join("ca.pem"),
        cert_file: dir.join("cert.pem"),
        key_file: dir.join("key.pem"),
    };
    write(&files.ca_file, ca_cert.pem().as_bytes(), 0o644)?;
    write(&files.cert_file, format!("{}{}", leaf_cert.pem(), ca_cert.pem()).as_bytes(), 0o644)?;
    write(&files.key_file, leaf_key.serialize_pem().as_bytes(), 0o600)?;
    Ok(files)
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))
}
