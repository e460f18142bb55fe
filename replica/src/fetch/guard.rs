//! Which addresses a `url` fetch may connect to.
//!
//! By default only globally reachable unicast addresses: every range of the IANA IPv4 and
//! IPv6 special-purpose address registries is refused (private, shared, loopback,
//! link-local, documentation, benchmarking, multicast, reserved…). Addresses that embed an
//! IPv4 address are judged by it: IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`
//! (the well-known prefix, RFC 6052) and 6to4 `2002:AABB:CCDD::/48`. The local-use NAT64
//! prefix `64:ff9b:1::/48` (RFC 8215, where the embedding is the operator's choice) and the
//! deprecated IPv4-compatible `::a.b.c.d` are refused outright, as is every IPv6 address
//! outside `2000::/3` (the only range IANA allocates global unicast from).
//!
//! An allow-list lets chosen networks (`--fetch-allow-cidr 10.20.0.0/16`) or host names
//! (`--fetch-allow-host artifacts.internal`, or `*.internal` for every name under it) through;
//! `--fetch-allow-private` (tests) lets every address through.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 network, `10.0.0.0/8` or `fd00::/8`; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// True when `ip` lies in this network (an IPv4-mapped IPv6 address counts as its IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => v4_in(ip, u32::from(net), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => v6_in(ip, u128::from(net), self.prefix),
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("'{s}' is not a CIDR (such as 10.0.0.0/8 or fd00::/8)"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("'{s}': the prefix length must be 0 to {max}"))?,
        };
        let net = canonical(net);
        let prefix = if net.is_ipv4() && max == 128 {
            prefix.saturating_sub(96)
        } else {
            prefix
        };
        Ok(Cidr { net, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// An IPv4-mapped IPv6 address as its IPv4; any other address unchanged.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn v4_in(ip: Ipv4Addr, net: u32, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(ip) & mask == net & mask
}

fn v6_in(ip: Ipv6Addr, net: u128, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    u128::from(ip) & mask == net & mask
}

/// The IPv4 special-purpose ranges (IANA registry) that are not globally reachable, with
/// `224.0.0.0/4` (multicast) and `240.0.0.0/4` (reserved, and the limited broadcast
/// 255.255.255.255).
const V4_REFUSED: [([u8; 4], u8); 16] = [
    ([0, 0, 0, 0], 8),       // "this network"
    ([10, 0, 0, 0], 8),      // private
    ([100, 64, 0, 0], 10),   // shared address space (carrier-grade NAT)
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link-local, cloud metadata (169.254.169.254)
    ([172, 16, 0, 0], 12),   // private
    ([192, 0, 0, 0], 24),    // IETF protocol assignments
    ([192, 0, 2, 0], 24),    // documentation TEST-NET-1
    ([192, 88, 99, 0], 24),  // 6to4 relay anycast (deprecated)
    ([192, 168, 0, 0], 16),  // private
    ([198, 18, 0, 0], 15),   // benchmarking
    ([198, 51, 100, 0], 24), // documentation TEST-NET-2
    ([203, 0, 113, 0], 24),  // documentation TEST-NET-3
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved, broadcast
    ([255, 255, 255, 255], 32),
];

/// True when `ip` is a globally reachable unicast IPv4 address.
pub fn is_global_v4(ip: Ipv4Addr) -> bool {
    !V4_REFUSED
        .iter()
        .any(|(net, prefix)| v4_in(ip, u32::from(Ipv4Addr::from(*net)), *prefix))
}

/// True when `ip` is a globally reachable unicast IPv6 address (see the module comment for
/// the addresses judged by the IPv4 address they embed).
pub fn is_global_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    let seg = ip.segments();
    // ::ffff:0:0/96, IPv4-mapped: the IPv4 address decides.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_global_v4(v4);
    }
    // 64:ff9b::/96, NAT64 well-known prefix: the embedded IPv4 address decides.
    if v6_in(ip, 0x0064_ff9b_u128 << 96, 96) {
        return is_global_v4(Ipv4Addr::from(bits as u32));
    }
    // 2002::/16, 6to4: the IPv4 address in bits 16..48 decides.
    if seg[0] == 0x2002 {
        return is_global_v4(Ipv4Addr::from((bits >> 80) as u32));
    }
    // Outside 2000::/3 nothing is global unicast: ::/128, ::1, IPv4-compatible ::a.b.c.d,
    // 64:ff9b:1::/48 (local-use NAT64), 100::/64 (discard), fc00::/7 (unique local),
    // fe80::/10 (link-local), fec0::/10 (site-local), ff00::/8 (multicast), 5f00::/16…
    if seg[0] & 0xe000 != 0x2000 {
        return false;
    }
    // Inside it: 2001::/23 (IETF protocol assignments: Teredo, ORCHID, benchmarking…),
    // 2001:db8::/32 and 3fff::/20 (documentation).
    let special = [
        (0x2001_u128 << 112, 23),
        (0x2001_0db8_u128 << 96, 32),
        (0x3fff_u128 << 112, 20),
    ];
    !special.iter().any(|(net, prefix)| v6_in(ip, *net, *prefix))
}

/// True when `ip` is globally reachable unicast: what a fetch may reach by default.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

/// A host name pattern of `--fetch-allow-host`: `name.example` exactly, or `*.example` for
/// every name under `example` (not `example` itself). Compared without case and trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern(String);

impl FromStr for HostPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let p = s.trim().trim_end_matches('.').to_ascii_lowercase();
        let name = p.strip_prefix("*.").unwrap_or(&p);
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(format!(
                "'{s}' is not a host name or *.domain pattern (such as artifacts.internal)"
            ));
        }
        Ok(HostPattern(p))
    }
}

impl HostPattern {
    /// True when `host` (a name from a URL) matches.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match self.0.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            None => host == self.0,
        }
    }
}

/// What a fetch may connect to.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Every address, global or not (`--fetch-allow-private`, for tests).
    pub allow_private: bool,
    /// Networks allowed besides the global ones.
    pub allow_cidrs: Vec<Cidr>,
    /// Host names allowed whatever they resolve to.
    pub allow_hosts: Vec<HostPattern>,
}

impl Policy {
    /// True when a host name from a URL is allowed whatever its addresses.
    pub fn allows_host(&self, host: &str) -> bool {
        self.allow_hosts.iter().any(|p| p.matches(host))
    }

    /// True when a fetch may connect to `ip`.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.allow_private || is_global(ip) || self.allow_cidrs.iter().any(|c| c.contains(ip))
    }

    /// True when a fetch of `host` may connect to `ip`.
    pub fn allows(&self, host: &str, ip: IpAddr) -> bool {
        self.allows_host(host) || self.allows_ip(ip)
    }
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
