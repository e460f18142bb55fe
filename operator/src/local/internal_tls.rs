//! Local mode's internal TLS (`--internal-tls`): at every start the launcher makes a new CA
//! and one replica certificate it signs (ECDSA P-256, rcgen), in `DIR/internal-tls/`. The
//! children serve HTTPS only with it and pull from each other over HTTPS only; the operator
//! trusts only that CA for replica traffic, checking the certificate's name
//! ([`deposito_replica::config::DEFAULT_INTERNAL_SERVER_NAME`]) whatever loopback address it
//! dials. The CA's key never touches the disk: a new start makes a new CA, and the children,
//! started by this process, get the new files.

use std::path::{Path, PathBuf};

use super::private::write_private;
use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The files of local mode's internal TLS.
#[derive(Debug, Clone)]
pub struct InternalTlsFiles {
    /// The CA certificate (what the operator and the replicas trust for replica traffic).
    pub ca: PathBuf,
    /// The replicas' certificate chain (leaf, then the CA).
    pub cert: PathBuf,
    /// The replicas' private key (0600).
    pub key: PathBuf,
    /// The name in the replicas' certificate.
    pub server_name: String,
}

impl InternalTlsFiles {
    /// The flags that give a child replica these files.
    pub fn replica_args(&self) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec![
            "--tls-cert".into(),
            path(&self.cert),
            "--tls-key".into(),
            path(&self.key),
            "--internal-ca-cert".into(),
            path(&self.ca),
            "--internal-server-name".into(),
            self.server_name.clone(),
        ]
    }
}

/// Makes a new CA and replica certificate in `data_dir/internal-tls/`.
pub fn generate(data_dir: &Path) -> anyhow::Result<InternalTlsFiles> {
    let dir = data_dir.join("internal-tls");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let server_name = deposito_replica::config::DEFAULT_INTERNAL_SERVER_NAME.to_string();

    let ca_key = KeyPair::generate().context("generating the internal CA's key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "deposito local internal CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).context("signing the internal CA")?;
    let issuer = Issuer::new(ca, &ca_key);

    let leaf_key = KeyPair::generate().context("generating the replicas' key")?;
    let mut leaf = CertificateParams::new(vec![server_name.clone()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, server_name.as_str());
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf
        .signed_by(&leaf_key, &issuer)
        .context("signing the replicas' certificate")?;

    let files = InternalTlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("replica.pem"),
        key: dir.join("replica.key"),
        server_name,
    };
    write_private(&files.key, &leaf_key.serialize_pem())?;
    write_private(&files.cert, &(leaf_cert.pem() + &ca_cert.pem()))?;
    write_private(&files.ca, &ca_cert.pem())?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deposito_util::tls::{pinned_name_client, CertFiles};

    #[test]
    fn the_generated_pair_loads_and_the_ca_verifies_it_for_its_name_only() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(dir.path()).unwrap();
        let pair = CertFiles {
            cert: files.cert.clone(),
            key: files.key.clone(),
            cert_flag: "--tls-cert",
            key_flag: "--tls-key",
        };
        pair.load().expect("a usable pair");
        pinned_name_client(&files.ca, "ca", &files.server_name, "name").expect("client");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
