//! A TLS server certificate that follows its files: [`ServerCert`] hands rustls the
//! certificate chain and key in force, [`CertFileReload`] rereads both PEM files when either
//! changes (a cert-manager renewal, a Secret updated in place) and swaps them in without a
//! restart. New handshakes get the new certificate; connections already open keep theirs.
//!
//! Internal traffic (operator to replica, replica to replica) dials replicas by address but
//! checks their certificate against one name: [`pinned_name_client`] builds the client side
//! of that (the internal CA as the only root, the certificate valid for the configured name
//! whatever address was dialed).
//!
//! A changed pair that cannot be used (unreadable, no certificate, no key, a key that is not
//! the certificate's) is logged as an error and the pair in force stays, so a half-written
//! renewal never takes HTTPS down.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::pki_types::{ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::token::{file_stamp, RELOAD_EVERY};
use crate::worker::{Next, StepError, Worker};

/// Why a certificate and key pair can't be used. `cert_flag` and `key_flag` name the flags
/// (or settings) the files came from, so the message says which one to fix.
#[derive(Debug, thiserror::Error)]
pub enum CertFileError {
    #[error("cannot read {flag} {path}: {reason}")]
    Unreadable {
        flag: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{flag} {path}: no certificate in it")]
    NoCertificate { flag: &'static str, path: PathBuf },
    #[error("{flag} {path}: no readable private key ({reason})")]
    NoKey {
        flag: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{cert_flag} and {key_flag} do not make a usable pair: {reason}")]
    Mismatch {
        cert_flag: &'static str,
        key_flag: &'static str,
        reason: String,
    },
}

/// Where a server's certificate chain (leaf first) and private key live, and the flags that
/// named them.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_flag: &'static str,
    pub key_flag: &'static str,
}

impl CertFiles {
    /// Reads and checks the pair: a chain with at least one certificate, a private key
    /// (PKCS#8, PKCS#1 or SEC1) that matches the leaf.
    pub fn load(&self) -> Result<CertifiedKey, CertFileError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| self.unreadable(&self.cert, self.cert_flag, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.unreadable(&self.cert, self.cert_flag, e))?;
        if chain.is_empty() {
            return Err(CertFileError::NoCertificate {
                flag: self.cert_flag,
                path: self.cert.clone(),
            });
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| CertFileError::NoKey {
            flag: self.key_flag,
            path: self.key.clone(),
            reason: e.to_string(),
        })?;
        CertifiedKey::from_der(chain, key, &provider()).map_err(|e| CertFileError::Mismatch {
            cert_flag: self.cert_flag,
            key_flag: self.key_flag,
            reason: e.to_string(),
        })
    }

    fn unreadable(&self, path: &Path, flag: &'static str, err: impl fmt::Display) -> CertFileError {
        CertFileError::Unreadable {
            flag,
            path: path.to_path_buf(),
            reason: err.to_string(),
        }
    }

    fn stamps(&self) -> PairStamps {
        (file_stamp(&self.cert), file_stamp(&self.key))
    }
}

/// The versions of a certificate and key pair: each file's [`file_stamp`].
type PairStamps = (Option<(SystemTime, u64)>, Option<(SystemTime, u64)>);

/// The crypto provider of every TLS endpoint of Deposito (ring).
pub fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The certificate in force, handed to rustls at each handshake.
pub struct ServerCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCert").finish_non_exhaustive()
    }
}

impl ServerCert {
    /// Loads `files` now: an unusable pair is an error here, at start-up.
    pub fn load(files: &CertFiles) -> Result<Arc<ServerCert>, CertFileError> {
        Ok(Arc::new(ServerCert {
            current: RwLock::new(Arc::new(files.load()?)),
        }))
    }

    /// The certificate chain in force (leaf first).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.read().expect("certificate lock").cert.clone()
    }

    fn replace(&self, key: CertifiedKey) {
        *self.current.write().expect("certificate lock") = Arc::new(key);
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("certificate lock").clone())
    }
}

/// A server configuration (TLS 1.2 and 1.3, ALPN h2 and http/1.1, no client certificates)
/// whose certificate is whatever `cert` holds at each handshake.
pub fn server_config(cert: Arc<ServerCert>) -> rustls::ServerConfig {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// Why the client side of internal TLS can't be set up.
#[derive(Debug, thiserror::Error)]
pub enum InternalTlsError {
    #[error("cannot read {flag} {path}: {reason}")]
    Unreadable {
        flag: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{flag} {path}: no usable CA certificate in it")]
    NoCa { flag: &'static str, path: PathBuf },
    #[error("{flag} '{name}' is not a DNS name")]
    BadName { flag: &'static str, name: String },
}

/// Checks a server's certificate against the roots and one fixed name, whatever address
/// was dialed (replicas are dialed by pod or loopback address; their certificate names the
/// service they belong to).
#[derive(Debug)]
struct PinnedName {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for PinnedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialed: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The client configuration of internal traffic: the CA certificates of `ca` as the only
/// roots, and a server certificate accepted only when it is valid for `name`. `ca_flag` and
/// `name_flag` name the settings in errors.
pub fn pinned_name_client(
    ca: &Path,
    ca_flag: &'static str,
    name: &str,
    name_flag: &'static str,
) -> Result<rustls::ClientConfig, InternalTlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .and_then(Iterator::collect::<Result<_, _>>)
        .map_err(|e| InternalTlsError::Unreadable {
            flag: ca_flag,
            path: ca.to_path_buf(),
            reason: e.to_string(),
        })?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    let no_ca = || InternalTlsError::NoCa {
        flag: ca_flag,
        path: ca.to_path_buf(),
    };
    if added == 0 {
        return Err(no_ca());
    }
    let provider = Arc::new(provider());
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|_| no_ca())?;
    let name = ServerName::try_from(name.to_string()).map_err(|_| InternalTlsError::BadName {
        flag: name_flag,
        name: name.to_string(),
    })?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedName { inner, name }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// HTTPS that follows `files`: the server configuration to serve with, and the worker that
/// keeps its certificate current (spawn it; `what` names it, `tls-reload-<what>`). An
/// unusable pair is an error here, at start-up.
pub fn following(
    files: CertFiles,
    what: &'static str,
) -> Result<(Arc<rustls::ServerConfig>, CertFileReload), CertFileError> {
    let cert = ServerCert::load(&files)?;
    Ok((
        Arc::new(server_config(cert.clone())),
        CertFileReload::new(what, files, cert),
    ))
}

/// `tls-reload-<what>`: rereads the certificate and key files whenever either changes
/// (checked every [`RELOAD_EVERY`]) and puts a usable new pair in force.
pub struct CertFileReload {
    what: &'static str,
    files: CertFiles,
    cert: Arc<ServerCert>,
    seen: PairStamps,
}

impl CertFileReload {
    /// Follows `files`, whose pair is in `cert` now; `what` names the endpoint in logs and in
    /// the worker's name (`gateway`, `replica`).
    pub fn new(what: &'static str, files: CertFiles, cert: Arc<ServerCert>) -> Self {
        let seen = files.stamps();
        Self {
            what,
            files,
            cert,
            seen,
        }
    }
}

#[async_trait::async_trait]
impl Worker for CertFileReload {
    fn name(&self) -> String {
        format!("tls-reload-{}", self.what)
    }

    fn first_step_after(&self) -> Duration {
        RELOAD_EVERY
    }

    async fn step(&mut self) -> Result<Next, StepError> {
        let now = self.files.stamps();
        if now != self.seen {
            self.seen = now;
            match self.files.load() {
                Ok(key) => {
                    self.cert.replace(key);
                    tracing::info!(cert = %self.files.cert.display(), endpoint = self.what, "certificate files changed: the new certificate is in force");
                }
                Err(err) => {
                    tracing::error!(error = %err, endpoint = self.what, "certificate not reloaded; the one in force stays");
                }
            }
        }
        Ok(Next::After(RELOAD_EVERY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate and its key, made by `openssl` (present wherever the tests
    /// run: tests/run-all installs it).
    fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        let status = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", &format!("/CN={name}"), "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run openssl");
        assert!(status.success(), "openssl req");
        (cert, key)
    }

    fn files(cert: &Path, key: &Path) -> CertFiles {
        CertFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            cert_flag: "--tls-cert",
            key_flag: "--tls-key",
        }
    }

    #[test]
    fn unusable_pairs_are_refused_with_the_flag_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert_a, key_a) = self_signed(dir.path(), "a");
        let (_, key_b) = self_signed(dir.path(), "b");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let missing = dir.path().join("missing.pem");
        for (cert, key, want) in [
            (&missing, &key_a, "cannot read --tls-cert"),
            (&empty, &key_a, "--tls-cert"),
            (&cert_a, &empty, "--tls-key"),
            (&cert_a, &key_b, "do not make a usable pair"),
        ] {
            let err = files(cert, key).load().expect_err(want);
            assert!(err.to_string().contains(want), "{want}: {err}");
        }
        assert!(files(&cert_a, &key_a).load().is_ok());
    }

    #[tokio::test]
    async fn the_reload_worker_swaps_a_good_pair_and_keeps_the_old_on_a_bad_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert_a, key_a) = self_signed(dir.path(), "a");
        let (cert_b, key_b) = self_signed(dir.path(), "b");
        let served = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::copy(&cert_a, &served.0).expect("copy");
        std::fs::copy(&key_a, &served.1).expect("copy");
        let files = files(&served.0, &served.1);
        let cert = ServerCert::load(&files).expect("load");
        let first = cert.chain();
        let mut worker = CertFileReload::new("test", files, cert.clone());
        assert_eq!(worker.name(), "tls-reload-test");
        // Only the certificate changed: the pair does not match, the old one stays.
        std::fs::copy(&cert_b, &served.0).expect("copy");
        worker.step().await.expect("step");
        assert_eq!(cert.chain(), first, "a mismatched pair is not taken");
        std::fs::copy(&key_b, &served.1).expect("copy");
        worker.step().await.expect("step");
        let second = cert.chain();
        assert_ne!(second, first, "the new pair is in force");
        assert_eq!(
            second,
            files_chain(&cert_b),
            "exactly the new file's certificate"
        );
    }

    fn files_chain(path: &Path) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(path)
            .expect("read")
            .collect::<Result<_, _>>()
            .expect("pem")
    }
}
