//! Certificates for HTTPS tests, made with the openssl command: a CA, and a certificate it
//! signs for IP addresses (subjectAltName), with the chain file a server presents.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The files of a test CA and of a server certificate it signed.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate (what clients trust).
    pub ca: PathBuf,
    /// The server certificate followed by the CA's: what `--tls-cert` takes.
    pub chain: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TlsFiles {
    /// Makes a CA and a certificate for `ip` in `dir`.
    pub fn generate(dir: &Path, ip: Ipv4Addr) -> TlsFiles {
        Self::generate_for(dir, &[ip])
    }

    /// Makes a CA and a certificate for every address of `ips` in `dir`.
    pub fn generate_for(dir: &Path, ips: &[Ipv4Addr]) -> TlsFiles {
        make_ca(dir);
        let sans: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
        let (chain, key) = sign_server(dir, "server", &sans);
        TlsFiles {
            ca: dir.join("ca.pem"),
            chain,
            key,
        }
    }

    /// A new server certificate and key for `ips`, signed by the same CA (`ca.key` in the
    /// CA's folder), as `renewed-N.pem`/`renewed-N.key` there: what a renewal (cert-manager)
    /// puts in place. Returns the chain and the key.
    pub fn renew(&self, ips: &[Ipv4Addr], n: u32) -> (PathBuf, PathBuf) {
        let dir = self.ca.parent().expect("the CA's folder");
        let sans: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
        sign_server(dir, &format!("renewed-{n}"), &sans)
    }

    /// Makes a CA and a certificate for the DNS name `name` in `dir` (the replicas' internal
    /// TLS certificate, checked against one name whatever address is dialed).
    pub fn generate_named(dir: &Path, name: &str) -> TlsFiles {
        make_ca(dir);
        let (chain, key) = sign_server(dir, "server", &[format!("DNS:{name}")]);
        TlsFiles {
            ca: dir.join("ca.pem"),
            chain,
            key,
        }
    }

    /// An HTTP client that trusts this CA (and nothing else beyond the system's roots).
    pub fn client(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.ca).expect("read CA");
        reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(600))
            .build()
            .expect("reqwest client")
    }
}

/// Makes `NAME.key` and a certificate for the subjectAltNames `sans` (`IP:…`, `DNS:…`) signed by `ca.pem`/`ca.key` of `dir`, and
/// the chain `NAME-chain.pem` (leaf, then the CA). Returns the chain and the key.
fn sign_server(dir: &Path, name: &str, sans: &[String]) -> (PathBuf, PathBuf) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let (key, csr, ext, leaf) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
        format!("{name}.pem"),
    );
    let mut csr_args = vec!["req", "-new", "-subj", "/CN=deposito gateway"];
    csr_args.extend(ec);
    csr_args.extend(["-keyout", &key, "-out", &csr]);
    openssl(dir, &csr_args);
    let extensions = format!(
        "subjectAltName={}\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        sans.join(",")
    );
    std::fs::write(dir.join(&ext), extensions).expect("write the extensions");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &leaf,
        ],
    );
    let chain = [
        std::fs::read(dir.join(&leaf)).expect("the leaf"),
        std::fs::read(dir.join("ca.pem")).expect("ca.pem"),
    ]
    .concat();
    let chain_path = if name == "server" {
        dir.join("chain.pem")
    } else {
        dir.join(format!("{name}-chain.pem"))
    };
    std::fs::write(&chain_path, chain).expect("write the chain");
    (chain_path, dir.join(key))
}

/// Makes a test CA, `ca.pem` and `ca.key`, in `dir`.
fn make_ca(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca_args = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=deposito test CA",
    ];
    ca_args.extend(ec);
    ca_args.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    ca_args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
    ca_args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    openssl(dir, &ca_args);
}
