//! The client's single error type. Every variant displays as one line; `main` prints it as
//! `deposito: <message>`.

use std::error::Error as StdError;

/// Everything that can go wrong in a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input caught locally, before anything is sent (invalid name, replicas of 0...).
    #[error("{0}")]
    Usage(String),
    /// Server URL or token could not be resolved.
    #[error("{0}")]
    Config(String),
    /// The gateway could not be reached at all.
    #[error("cannot reach server {server}: {reason}")]
    Unreachable { server: String, reason: String },
    /// The request failed after the connection was made (reset, cut body, timeout...).
    #[error("{what}: {reason}")]
    Transport { what: String, reason: String },
    /// The gateway answered with an error status. `code`/`message` come from its JSON
    /// `ErrorBody` when it sent one.
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The gateway answered 2xx with something that is not what the contract says.
    #[error("unexpected response from server: {0}")]
    Protocol(String),
    /// Downloaded content did not match the announced sha256.
    #[error("digest mismatch for {name}: server announced sha256 {expected}, received {actual}; nothing was written")]
    DigestMismatch {
        name: String,
        expected: String,
        actual: String,
    },
    /// A wait gave up.
    #[error("{0}")]
    Timeout(String),
    /// Local file-system error.
    #[error("{context}: {reason}")]
    Io { context: String, reason: String },
    /// Ctrl-C.
    #[error("interrupted")]
    Interrupted,
    /// A step of `deposito selftest` failed; `cleanup` says what became of the test file
    /// (empty, or `; ...`).
    #[error("selftest failed at {step}: {source}{cleanup}")]
    Selftest {
        step: &'static str,
        source: Box<Error>,
        cleanup: String,
    },
}

impl Error {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, e: &std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            reason: io_reason(e),
        }
    }

    /// True for a gateway answer with this HTTP status.
    pub fn is_status(&self, status: u16) -> bool {
        matches!(self, Error::Api { status: s, .. } if *s == status)
    }

    /// True when retrying the same request later may succeed (network trouble, 5xx other than
    /// 501/507).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::Transport { .. } => true,
            Error::Api { status, .. } => *status >= 500 && *status != 501 && *status != 507,
            _ => false,
        }
    }

    /// The message on one line (newlines from foreign text collapsed).
    pub fn one_line(&self) -> String {
        one_line(&self.to_string())
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Interrupted => 130,
            Error::Selftest { source, .. } => source.exit_code(),
            _ => 1,
        }
    }
}

/// Collapses whitespace runs containing newlines into single spaces.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An `io::Error` as a short lowercase reason, without the "(os error N)" suffix.
pub fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    let known = match e.kind() {
        NotFound => Some("no such file or directory"),
        PermissionDenied => Some("permission denied"),
        ConnectionRefused => Some("connection refused"),
        ConnectionReset => Some("connection reset"),
        ConnectionAborted => Some("connection aborted"),
        BrokenPipe => Some("broken pipe"),
        TimedOut => Some("timed out"),
        AlreadyExists => Some("already exists"),
        UnexpectedEof => Some("unexpected end of data"),
        StorageFull => Some("no space left on device"),
        IsADirectory => Some("is a directory"),
        NotADirectory => Some("not a directory"),
        _ => None,
    };
    match known {
        Some(k) => k.to_string(),
        None => {
            let s = e.to_string();
            match s.find(" (os error") {
                Some(i) => s[..i].to_string(),
                None => s,
            }
        }
    }
}

/// The deepest meaningful cause of a reqwest error, as one short line.
fn reqwest_reason(e: &reqwest::Error) -> String {
    let mut source: Option<&(dyn StdError + 'static)> = e.source();
    let mut last: Option<String> = None;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            // An io::Error may wrap a further cause; prefer its kind when it is known.
            let r = io_reason(io);
            if io.kind() != std::io::ErrorKind::Other {
                return r;
            }
            last = Some(r);
        } else {
            last = Some(s.to_string());
        }
        source = s.source();
    }
    if e.is_timeout() {
        return "timed out".into();
    }
    last.unwrap_or_else(|| e.to_string())
}

/// Maps a reqwest error, given the server base URL and a description of the request.
pub fn from_reqwest(e: reqwest::Error, server: &str, what: &str) -> Error {
    let reason = one_line(&reqwest_reason(&e));
    if e.is_connect() {
        Error::Unreachable {
            server: server.to_string(),
            reason,
        }
    } else if e.is_timeout() {
        Error::Transport {
            what: what.to_string(),
            reason: "timed out".into(),
        }
    } else if e.is_decode() {
        Error::Protocol(format!("{what}: {reason}"))
    } else {
        Error::Transport {
            what: what.to_string(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_display_status_code_and_message() {
        let e = Error::Api {
            status: 400,
            code: "invalid_name".into(),
            message: "name contains '/'".into(),
        };
        assert_eq!(e.to_string(), "400 invalid_name: name contains '/'");
        assert!(!e.is_transient());
        assert!(Error::Api {
            status: 503,
            code: "no_replica".into(),
            message: "x".into()
        }
        .is_transient());
    }

    #[test]
    fn one_line_collapses_newlines() {
        assert_eq!(one_line("a\nb  c\r\n d"), "a b c d");
    }

    #[test]
    fn io_reasons_are_short() {
        let e = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(io_reason(&e), "no such file or directory");
        let e = std::io::Error::from_raw_os_error(28);
        assert_eq!(io_reason(&e), "no space left on device");
    }
}
