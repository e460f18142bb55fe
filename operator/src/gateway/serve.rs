//! Serving the gateway: plain HTTP, or HTTPS (rustls, TLS 1.2 and 1.3) when given a PEM
//! certificate chain and key. Either way accepted sockets get TCP_NODELAY, and a shutdown
//! signal lets requests in flight finish. The certificate follows its files
//! ([`deposito_util::tls`]): a renewed pair is served without a restart.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use clap::Args;
use deposito_util::tls::{self, CertFileReload, CertFiles, ServerCert};

/// How long requests in flight may run on after a shutdown signal (TLS mode).
const DRAIN_TIME: Duration = Duration::from_secs(10);

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
        let served = ServerCert::load(&files)?;
        Ok(Some(ServedTls {
            config: Arc::new(tls::server_config(served.clone())),
            reload: CertFileReload::new("gateway", files, served),
        }))
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

/// Serves `app` on `listener` until `shutdown` completes: HTTPS with `tls`, else HTTP.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Some(tls) = tls else {
        return axum::serve(deposito_replica::http::nodelay(listener), app)
            .with_graceful_shutdown(shutdown)
            .await;
    };
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(DRAIN_TIME));
    });
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(
        axum_server::tls_rustls::RustlsConfig::from_config(tls),
    )
    .acceptor(axum_server::accept::NoDelayAcceptor::new());
    axum_server::from_tcp(listener.into_std()?)
        .acceptor(acceptor)
        .handle(handle)
        .serve(app.into_make_service())
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
