//! The Deposito command-line client as a library: argument parsing, configuration, a typed
//! gateway client and the commands. `src/main.rs` is a thin wrapper around [`main_with`].

pub mod api;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod format;
pub mod progress;
pub mod upload_body;

pub use api::GatewayClient;
pub use error::Error;

/// Runs a parsed command line on a fresh runtime, printing any error as one line
/// (`deposito: <message>`) on stderr. Returns the process exit code.
pub fn main_with(cli: cli::Cli) -> u8 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!(
                "deposito: cannot start the runtime: {}",
                error::io_reason(&e)
            );
            return 1;
        }
    };
    let result = rt.block_on(async {
        tokio::select! {
            r = commands::run(cli) => r,
            _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
        }
    });
    // Don't wait for blocking tasks (a hash of a large file) after an interrupt.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("deposito: {}", e.one_line());
            e.exit_code()
        }
    }
}
