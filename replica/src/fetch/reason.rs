//! Why a `url` fetch was refused or failed, in the fixed words of the error body (never the
//! raw connection error, which would tell a tenant what listens where). Apart from the fetch
//! itself, so that the error type does not depend on it.

/// Why a fetch was refused or failed: the fixed words of the error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The host is, or resolves to, an address the policy refuses.
    AddressNotAllowed,
    /// The host name does not resolve.
    DoesNotResolve,
    ConnectionRefused,
    /// No route to the host or its network.
    Unreachable,
    /// Any other failure to connect (TLS included).
    CannotConnect,
    /// The connection closed or broke before a response.
    NoResponse,
    /// An HTTP status other than 2xx (a redirect included: they are not followed).
    Http(u16),
    TimedOut,
    TooSlow,
    /// Over `--fetch-max-bytes` or the request's `size`.
    TooLarge,
    /// The body ended early or broke off.
    CutShort,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::AddressNotAllowed => "address not allowed",
            Reason::DoesNotResolve => "host does not resolve",
            Reason::ConnectionRefused => "connection refused",
            Reason::Unreachable => "host unreachable",
            Reason::CannotConnect => "cannot connect",
            Reason::NoResponse => "no response",
            Reason::Http(code) => return write!(f, "HTTP {code}"),
            Reason::TimedOut => "timed out",
            Reason::TooSlow => "too slow",
            Reason::TooLarge => deposito_api::replica::FETCH_TOO_LARGE,
            Reason::CutShort => "cut short",
        })
    }
}
