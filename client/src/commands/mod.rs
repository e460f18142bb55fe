//! One module per command family; `run` dispatches a parsed command line.

pub mod deposit;
pub mod files;
pub mod replicas;
pub mod retrieve;
pub mod selftest;
pub mod wait;

use std::io::Write;

use crate::api::GatewayClient;
use crate::cli::{Cli, Command, GlobalOpts};
use crate::config::Config;
use crate::error::Error;

/// A resolved connection: the client and the namespace to work in.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub client: GatewayClient,
    pub namespace: String,
}

impl Ctx {
    pub fn new(
        server: &str,
        token: &str,
        namespace: &str,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<Self, Error> {
        Ok(Self {
            client: GatewayClient::new(server, token, ca_cert)?,
            namespace: namespace.to_string(),
        })
    }

    /// Resolves the global options (server, token, namespace).
    pub fn from_opts(opts: &GlobalOpts) -> Result<Self, Error> {
        let cfg = Config::from_opts(opts)?;
        Self::new(
            &cfg.server,
            &cfg.token,
            &cfg.namespace,
            cfg.ca_cert.as_deref(),
        )
    }
}

/// Checks a file name locally, with the same rules as the gateway.
pub fn validate_name(name: &str) -> Result<(), Error> {
    deposito_api::names::validate_file_name(name)
        .map_err(|e| Error::Usage(format!("invalid name '{}': {e}", name.escape_debug())))
}

/// Checks a replication level locally.
pub fn validate_replicas(n: u32) -> Result<(), Error> {
    use deposito_api::openapi::MAX_REPLICAS;
    if n == 0 {
        Err(Error::Usage(
            "invalid replicas 0: the replication level must be at least 1".into(),
        ))
    } else if n > MAX_REPLICAS {
        Err(Error::Usage(format!(
            "invalid replicas {n}: the replication level is at most {MAX_REPLICAS}"
        )))
    } else {
        Ok(())
    }
}

/// Writes command output to stdout. A closed pipe (`deposito ls | head`) is not an error.
pub fn print_out(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::io("cannot write to stdout", &e)),
    }
}

/// Pretty JSON plus a newline.
pub fn to_json<T: serde::Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into());
    s.push('\n');
    s
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), Error> {
    let g = &cli.global;
    match cli.command {
        Command::Completions(a) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut buf = Vec::new();
            clap_complete::generate(a.shell, &mut cmd, "deposito", &mut buf);
            print_out(&String::from_utf8_lossy(&buf))
        }
        Command::Deposit(a) => deposit::run(g, a).await,
        Command::Retrieve(a) => retrieve::run(g, a).await,
        Command::SetReplicas(a) => files::run_set_replicas(g, a).await,
        Command::SetLifecycle(a) => files::run_set_lifecycle(g, a).await,
        Command::NamespaceLifecycle(a) => files::run_namespace_lifecycle(g, a).await,
        Command::Retain(a) => files::run_retain(g, a).await,
        Command::Ls(a) => files::run_ls(g, a).await,
        Command::Status(a) => files::run_status(g, a).await,
        Command::Rm(a) => files::run_rm(g, a).await,
        Command::Replicas(a) => replicas::run_list(g, a).await,
        Command::Drain(a) => replicas::run_drain(g, a, true).await,
        Command::Undrain(a) => replicas::run_drain(g, a, false).await,
        Command::Selftest(a) => selftest::run(g, a).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_validation_messages() {
        assert!(validate_name("report.pdf").is_ok());
        assert_eq!(
            validate_name("a/b").unwrap_err().to_string(),
            "invalid name 'a/b': name contains '/'"
        );
        assert_eq!(
            validate_name("..").unwrap_err().to_string(),
            "invalid name '..': name contains '..'"
        );
        assert_eq!(
            validate_name("nul\0").unwrap_err().to_string(),
            "invalid name 'nul\\0': name contains a NUL byte"
        );
        let long = "x".repeat(300);
        assert!(validate_name(&long)
            .unwrap_err()
            .to_string()
            .ends_with("name is 300 bytes long; the limit is 255"));
        assert_eq!(
            validate_name("").unwrap_err().to_string(),
            "invalid name '': name is empty"
        );
        // The name is shown escaped: a bidirectional override must not reorder the message.
        assert_eq!(
            validate_name("report\u{202E}fdp.exe")
                .unwrap_err()
                .to_string(),
            "invalid name 'report\\u{202e}fdp.exe': name contains U+202E (a Unicode format \
             character)"
        );
        assert_eq!(
            validate_name(".DEPOSITO-x").unwrap_err().to_string(),
            "invalid name '.DEPOSITO-x': name must not start with '.deposito' (in any letter case)"
        );
    }

    #[test]
    fn replica_validation_messages() {
        assert!(validate_replicas(1).is_ok());
        assert!(validate_replicas(7).is_ok());
        assert!(validate_replicas(512).is_ok());
        assert!(validate_replicas(513).is_err());
        assert_eq!(
            validate_replicas(0).unwrap_err().to_string(),
            "invalid replicas 0: the replication level must be at least 1"
        );
    }
}
