//! Serving the gateway: plain HTTP, or HTTPS (rustls, TLS 1.2 and 1.3) when given a PEM
//! certificate chain and key. Either way accepted sockets get TCP_NODELAY, the connection
//! cap, timeouts and request limits of [`ServeArgs`], and a shutdown signal lets requests in
//! flight finish. The certificate follows its files
//! ([`deposito_util::tls`]): a renewed pair is served without a restart.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use clap::Args;
use deposito_util::tls::{self, CertFileReload, CertFiles};

pub use deposito_replica::http::serve::ServeArgs;

/// `--tls-cert` and `--tls-key`: HTTPS on the gateway.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// PEM certificate chain (leaf first) to serve the gateway over HTTPS; needs --tls-key.
    #[arg(
        long,
        env = "DEPOSITO_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(
        long,
        env = "DEPOSITO_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

/// HTTPS for a server: the configuration handed to the acceptor, and the worker that keeps
/// its certificate current (spawn it; without it the certificate never changes).
pub struct ServedTls {
    pub config: Arc<rustls::ServerConfig>,
    pub reload: CertFileReload,
}

impl TlsArgs {
    /// HTTPS with a certificate that follows its files, or `None` for plain HTTP.
    /// Unreadable files, a file without a certificate or key, or a key that does not match
    /// the certificate are errors here, at start-up, not at the first handshake.
    pub fn server_config(&self) -> anyhow::Result<Option<ServedTls>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let files = CertFiles {
            cert: cert.clone(),
            key: key.clone(),
            cert_flag: "--tls-cert",
            key_flag: "--tls-key",
        };
        let (config, reload) = tls::following(files, "gateway")?;
        Ok(Some(ServedTls { config, reload }))
    }

    /// `https` with a certificate, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes: HTTPS with `tls`, else HTTP, with
/// the connection cap, timeouts and request limits of `limits` (the replica's serving loop,
/// [`deposito_replica::http::serve`], with the gateway's routes classed by
/// [`super::classify`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    deposito_replica::http::serve::serve(listener, app, super::classify, limits, tls, shutdown)
        .await
}

/// Serves the S3 API ([`super::s3::router`]) like [`serve`], with the S3 routes' classes.
pub async fn serve_s3(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    deposito_replica::http::serve::serve(listener, app, super::s3::classify, limits, tls, shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn missing_or_empty_files_are_start_up_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let args = |cert: &Path, key: &Path| TlsArgs {
            tls_cert: Some(cert.to_path_buf()),
            tls_key: Some(key.to_path_buf()),
        };
        let missing = dir.path().join("missing.pem");
        let err = args(&missing, &missing).server_config().err().unwrap();
        assert!(
            format!("{err:#}").contains("cannot read --tls-cert"),
            "{err:#}"
        );
        let err = args(&empty, &empty).server_config().err().unwrap();
        assert!(format!("{err:#}").contains("no certificate"), "{err:#}");
        assert!(TlsArgs::default().server_config().unwrap().is_none());
        assert_eq!(TlsArgs::default().scheme(), "http");
    }
}
