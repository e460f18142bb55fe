//! Listen addresses and listeners.
//!
//! `--listen` values come from pod templates as `$(POD_IP):PORT` or `[::]:PORT`. An IPv6 pod
//! IP makes the first `fd00::5:7800`, which is not a socket address: [`parse_listen`] reads
//! the part after the last colon as the port. `[::]` binds one socket for both families
//! (IPV6_V6ONLY off), so `kubectl port-forward` (which connects to 127.0.0.1 in the pod) and
//! IPv4 and IPv6 clients all reach it; on a kernel without IPv6 it binds 0.0.0.0 instead.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// `HOST:PORT`, `[V6]:PORT` or `V6:PORT` (a bare IPv6 address, the port after its last colon).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = || {
        format!("'{text}' is not an address and port (such as 10.0.0.5:7800, [::]:7800 or fd00::5:7800)")
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let ip: IpAddr = host.parse().map_err(|_| bad())?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    Ok(SocketAddr::new(ip, port))
}

/// Binds `addr`; the IPv6 unspecified address (`[::]`) accepts IPv4 too, and falls back to
/// `0.0.0.0` where the kernel has no IPv6.
pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    if let IpAddr::V6(v6) = addr.ip() {
        if v6.is_unspecified() {
            match bind_socket(addr, true) {
                Err(err) if err.raw_os_error() == Some(libc_eafnosupport()) => {
                    let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port());
                    return bind_socket(v4, false);
                }
                other => return other,
            }
        }
    }
    bind_socket(addr, false)
}

/// EAFNOSUPPORT on Linux.
const fn libc_eafnosupport() -> i32 {
    97
}

fn bind_socket(addr: SocketAddr, dual_stack: bool) -> std::io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if dual_stack {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    tokio::net::TcpListener::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_of_both_families_parse() {
        let cases = [
            ("127.0.100.2:7800", "127.0.100.2:7800"),
            ("[::]:7800", "[::]:7800"),
            ("fd00::5:7800", "[fd00::5]:7800"),
            ("[fd00::5]:9090", "[fd00::5]:9090"),
        ];
        for (text, want) in cases {
            assert_eq!(parse_listen(text).unwrap().to_string(), want, "{text}");
        }
        for bad in ["localhost:80", "1.2.3.4", "::1", "fd00::5:99999", ""] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }

    /// A dual-stack socket (what `[::]` gets) takes IPv4 clients. Tested on the v4-mapped
    /// loopback address, so the test never listens beyond loopback.
    #[tokio::test]
    async fn a_dual_stack_socket_takes_ipv4_clients() {
        if std::net::TcpListener::bind("[::1]:0").is_err() {
            return; // no IPv6 here: `bind` takes 0.0.0.0 instead
        }
        let listener = bind_socket("[::ffff:127.0.0.1]:0".parse().unwrap(), true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accept = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("IPv4 loopback reaches the dual-stack socket");
        accept.await.unwrap().unwrap();
    }
}
