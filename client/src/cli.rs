//! Command-line syntax (clap derive). Parsing only: no I/O happens here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Default gateway URL (the local operator's default `--listen`).
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7800";
/// Default `--timeout` of the commands that wait for convergence, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 600;

/// Deposito client: store files with N verified copies, retrieve them, change N.
#[derive(Debug, Parser)]
#[command(name = "deposito", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

/// Options that apply to every command; each has an environment-variable twin.
#[derive(Debug, Clone, Args)]
pub struct GlobalOpts {
    /// Gateway base URL.
    #[arg(long, global = true, env = "DEPOSITO_SERVER", default_value = DEFAULT_SERVER, value_name = "URL")]
    pub server: String,
    /// Client bearer token (takes precedence over --token-file).
    #[arg(
        long,
        global = true,
        env = "DEPOSITO_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// File holding the client token [default: $DEPOSITO_DATA_DIR/token, else
    /// ~/.local/share/deposito/token].
    #[arg(long, global = true, env = "DEPOSITO_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Namespace of the files.
    #[arg(
        short = 'n',
        long,
        global = true,
        env = "DEPOSITO_NAMESPACE",
        default_value = "default",
        value_name = "NS"
    )]
    pub namespace: String,
    /// PEM file of the certificate authority (or the self-signed certificate) to trust for an
    /// `https://` server, besides the system's roots.
    #[arg(long, global = true, env = "DEPOSITO_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload a file and keep N verified copies of it.
    Deposit(DepositArgs),
    /// Download a file, verifying its sha256.
    Retrieve(RetrieveArgs),
    /// Change a file's replication level and wait until it has exactly N copies.
    SetReplicas(SetReplicasArgs),
    /// Set a file's lifecycle (`3,1@7d,expire@90d`), or remove it (`none`).
    SetLifecycle(SetLifecycleArgs),
    /// Lock a file until a date: no deletion, replacement or lowering before then.
    Retain(RetainArgs),
    /// Show or set the namespace's default lifecycle (for its files that have none).
    NamespaceLifecycle(NamespaceLifecycleArgs),
    /// List the files of the namespace.
    Ls(JsonArgs),
    /// Show one file's status: holders, ready copies, phase, conditions.
    Status(StatusArgs),
    /// Delete a file and all of its copies.
    Rm(RmArgs),
    /// List the storage replicas.
    Replicas(JsonArgs),
    /// Mark a replica draining: it gets no new copies and its copies move away.
    Drain(ReplicaIdArgs),
    /// Clear a replica's draining mark.
    Undrain(ReplicaIdArgs),
    /// Check the system end to end (for `helm test`): deposit a generated file at N copies,
    /// retrieve it and compare every byte, delete it.
    Selftest(SelftestArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
}

/// How long to wait, shared by the commands that wait for convergence.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Return once the gateway acknowledges, without waiting for the copies.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting after this many seconds (exit 1).
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS, value_name = "SECS")]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct DepositArgs {
    /// The local file to upload.
    pub path: PathBuf,
    /// Number of copies to keep (1 to 512).
    #[arg(short = 'r', long, default_value_t = 1, value_name = "N")]
    pub replicas: u32,
    /// Name to store the file under [default: the file name of PATH].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The number of copies as the file ages: `3,1@7d,expire@90d` keeps 3 copies, 1 from
    /// 7 days of age, and deletes the file at 90 days (ages in s, m, h or d). A first bare
    /// number replaces --replicas.
    #[arg(long, value_name = "SPEC")]
    pub lifecycle: Option<String>,
    /// Lock the file until this time (RFC 3339 or a date such as 2027-01-31): it can't be
    /// deleted, replaced or lowered before then.
    #[arg(long, value_name = "TIME")]
    pub retain_until: Option<String>,
    /// When the gateway acknowledges: `all` once the N copies, written at the same time, are
    /// verified and fsync'd; `one` once the first is (the others follow).
    #[arg(long, value_enum, default_value_t = AckMode::All, value_name = "WHEN")]
    pub ack: AckMode,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `--ack` of `deposit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AckMode {
    One,
    All,
}

impl From<AckMode> for deposito_api::gateway::Ack {
    fn from(mode: AckMode) -> Self {
        match mode {
            AckMode::One => deposito_api::gateway::Ack::One,
            AckMode::All => deposito_api::gateway::Ack::All,
        }
    }
}

#[derive(Debug, Args)]
pub struct RetrieveArgs {
    /// Name of the stored file.
    pub name: String,
    /// Where to write it: a file, a directory, or `-` for stdout [default: ./NAME].
    #[arg(short = 'o', long, value_name = "PATH")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SetReplicasArgs {
    /// Name of the stored file.
    pub name: String,
    /// New number of copies (1 to 512).
    pub replicas: u32,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct SetLifecycleArgs {
    /// Name of the stored file.
    pub name: String,
    /// The lifecycle (`3,1@7d,expire@90d`; ages count from the current content's
    /// acknowledgement), or `none` to remove it.
    pub spec: String,
}

#[derive(Debug, Args)]
pub struct NamespaceLifecycleArgs {
    /// The lifecycle (`1@7d,expire@90d`) of every file of the namespace without one of its
    /// own, or `none` to remove it; without it, the one in force is shown.
    pub spec: Option<String>,
}

#[derive(Debug, Args)]
pub struct RetainArgs {
    /// Name of the stored file.
    pub name: String,
    /// Until when (RFC 3339 or a date such as 2027-01-31). A lock can be extended, never
    /// shortened.
    pub until: String,
}

#[derive(Debug, Args)]
pub struct JsonArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Name of the stored file.
    pub name: String,
    /// Print the FileStatus JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Name of the stored file.
    pub name: String,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct ReplicaIdArgs {
    /// Replica id, as shown by `deposito replicas`.
    pub id: String,
}

/// Largest `selftest --size`: the content is generated and compared in memory.
pub const MAX_SELFTEST_SIZE: u64 = 1 << 30;

#[derive(Debug, Args)]
pub struct SelftestArgs {
    /// Number of copies to deposit the test file at (1 to 512).
    #[arg(short = 'r', long, default_value_t = 2, value_name = "N")]
    pub replicas: u32,
    /// Size of the generated test file, in bytes (1 to 1 GiB; held in memory).
    #[arg(
        long,
        default_value_t = 65536,
        value_name = "BYTES",
        value_parser = clap::value_parser!(u64).range(1..=MAX_SELFTEST_SIZE)
    )]
    pub size: u64,
    /// Give up waiting for the copies, or for the deletion, after this many seconds (exit 1).
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS, value_name = "SECS")]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// Shell to generate the script for.
    pub shell: clap_complete::Shell,
}

/// The warning printed when the token comes from the command line.
pub const TOKEN_ON_COMMAND_LINE: &str = "warning: --token on the command line is visible to \
     every user of this host (ps, /proc); set DEPOSITO_TOKEN or use --token-file instead";

/// Whether `args` (the process's arguments, program name first) give `--token` itself, not
/// through `DEPOSITO_TOKEN`. Arguments after `--` are operands, not options.
pub fn token_on_command_line(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    args.into_iter()
        .skip(1)
        .take_while(|arg| arg != "--")
        .any(|arg| {
            let arg = arg.to_string_lossy();
            arg == "--token" || arg.starts_with("--token=")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_parse_before_and_after_the_command() {
        let cli = Cli::try_parse_from([
            "deposito",
            "--server",
            "http://h:1",
            "deposit",
            "f.txt",
            "-r",
            "3",
            "-n",
            "team",
            "--token",
            "t",
            "--no-wait",
        ])
        .unwrap();
        assert_eq!(cli.global.server, "http://h:1");
        assert_eq!(cli.global.namespace, "team");
        assert_eq!(cli.global.token.as_deref(), Some("t"));
        match cli.command {
            Command::Deposit(d) => {
                assert_eq!(d.replicas, 3);
                assert!(d.wait.no_wait);
                assert_eq!(d.wait.timeout, DEFAULT_TIMEOUT_SECS);
                assert_eq!(d.path, PathBuf::from("f.txt"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn usage_errors_are_clap_errors() {
        assert!(Cli::try_parse_from(["deposito", "deposit"]).is_err());
        assert!(Cli::try_parse_from(["deposito", "set-replicas", "a", "x"]).is_err());
        assert!(Cli::try_parse_from(["deposito", "frobnicate"]).is_err());
    }

    #[test]
    fn a_token_on_the_command_line_is_noticed() {
        let args = |list: &[&str]| {
            list.iter()
                .map(std::ffi::OsString::from)
                .collect::<Vec<_>>()
        };
        for (list, expected) in [
            (&["deposito", "--token", "t", "ls"][..], true),
            (&["deposito", "ls", "--token=t"][..], true),
            (&["deposito", "--token-file", "f", "ls"][..], false),
            (&["deposito", "ls"][..], false),
            (&["deposito", "put", "--", "--token"][..], false),
        ] {
            assert_eq!(token_on_command_line(args(list)), expected, "{list:?}");
        }
    }
}
