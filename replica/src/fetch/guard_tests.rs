//! Table tests of the fetch guard: every special-purpose range, its edges, and the
//! allow-list.

use super::*;

/// (address, globally reachable): the first and last address of every refused range, and
/// the global addresses just outside them.
const TABLE: &[(&str, bool)] = &[
    // IPv4 special-purpose registry.
    ("0.0.0.0", false),
    ("0.255.255.255", false),
    ("1.0.0.0", true),
    ("9.255.255.255", true),
    ("10.0.0.0", false),
    ("10.255.255.255", false),
    ("11.0.0.0", true),
    ("100.63.255.255", true),
    ("100.64.0.0", false),
    ("100.127.255.255", false),
    ("100.128.0.0", true),
    ("126.255.255.255", true),
    ("127.0.0.1", false),
    ("127.255.255.255", false),
    ("128.0.0.0", true),
    ("169.253.255.255", true),
    ("169.254.0.0", false),
    ("169.254.169.254", false),
    ("169.254.255.255", false),
    ("169.255.0.0", true),
    ("172.15.255.255", true),
    ("172.16.0.0", false),
    ("172.31.255.255", false),
    ("172.32.0.0", true),
    ("192.0.0.0", false),
    ("192.0.0.255", false),
    ("192.0.1.0", true),
    ("192.0.2.0", false),
    ("192.0.2.255", false),
    ("192.0.3.0", true),
    ("192.88.98.255", true),
    ("192.88.99.0", false),
    ("192.88.99.255", false),
    ("192.88.100.0", true),
    ("192.167.255.255", true),
    ("192.168.0.0", false),
    ("192.168.255.255", false),
    ("192.169.0.0", true),
    ("198.17.255.255", true),
    ("198.18.0.0", false),
    ("198.19.255.255", false),
    ("198.20.0.0", true),
    ("198.51.99.255", true),
    ("198.51.100.0", false),
    ("198.51.100.255", false),
    ("198.51.101.0", true),
    ("203.0.112.255", true),
    ("203.0.113.0", false),
    ("203.0.113.255", false),
    ("203.0.114.0", true),
    ("223.255.255.255", true),
    ("224.0.0.0", false),
    ("239.255.255.255", false),
    ("240.0.0.0", false),
    ("255.255.255.254", false),
    ("255.255.255.255", false),
    ("93.184.216.34", true),
    ("8.8.8.8", true),
    // IPv6 special-purpose registry.
    ("::", false),
    ("::1", false),
    ("::2", false),
    ("::7f00:1", false),         // IPv4-compatible ::127.0.0.1
    ("::808:808", false),        // IPv4-compatible ::8.8.8.8: refused outright
    ("::ffff:127.0.0.1", false), // IPv4-mapped: judged by the IPv4
    ("::ffff:10.1.2.3", false),
    ("::ffff:169.254.169.254", false),
    ("::ffff:8.8.8.8", true),
    ("64:ff9b::7f00:1", false),    // NAT64 well-known: 127.0.0.1
    ("64:ff9b::a9fe:a9fe", false), // NAT64 well-known: 169.254.169.254
    ("64:ff9b::808:808", true),    // NAT64 well-known: 8.8.8.8
    ("64:ff9b:1::808:808", false), // local-use NAT64: refused outright
    ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", false),
    ("100::", false),
    ("100::ffff:ffff:ffff:ffff", false),
    ("2001::", false), // Teredo
    ("2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", false),
    ("2001:200::", true), // just past 2001::/23
    ("2001:db8::", false),
    ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", false),
    ("2001:db9::", true),
    ("2002:7f00:1::", false),  // 6to4 of 127.0.0.1
    ("2002:a00:1::1", false),  // 6to4 of 10.0.0.1
    ("2002:808:808::1", true), // 6to4 of 8.8.8.8
    ("3fff::1", false),        // documentation (RFC 9637)
    ("fc00::", false),
    ("fd12:3456::1", false),
    ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
    ("fe80::", false),
    ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
    ("fec0::1", false),
    ("ff00::", false),
    ("ff02::1", false),
    ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
    ("1fff:ffff::1", false), // below 2000::/3
    ("4000::1", false),      // above it
    ("2606:4700:4700::1111", true),
    ("2a00:1450:4001::1", true),
];

#[test]
fn special_purpose_ranges_table() {
    for (ip, global) in TABLE {
        let parsed: IpAddr = ip.parse().unwrap();
        assert_eq!(is_global(parsed), *global, "{ip}");
        let default = Policy::default();
        assert_eq!(default.allows("example.com", parsed), *global, "{ip}");
        let private = Policy {
            allow_private: true,
            ..Policy::default()
        };
        assert!(private.allows("example.com", parsed), "{ip}");
    }
}

#[test]
fn allow_list_of_cidrs_and_hosts() {
    let policy = Policy {
        allow_private: false,
        allow_cidrs: vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.20.0.0/16".parse().unwrap(),
            "fd00:1::/32".parse().unwrap(),
        ],
        allow_hosts: vec![
            "artifacts.internal".parse().unwrap(),
            "*.corp.example".parse().unwrap(),
        ],
    };
    for (host, ip, allowed) in [
        ("x", "127.0.0.1", true),
        ("x", "127.200.1.1", true),
        ("x", "::ffff:127.0.0.1", true),
        ("x", "10.20.255.255", true),
        ("x", "10.21.0.0", false),
        ("x", "169.254.169.254", false),
        ("x", "fd00:1:ffff::1", true),
        ("x", "fd00:2::1", false),
        ("x", "::1", false),
        ("x", "8.8.8.8", true),
        ("artifacts.internal", "10.9.9.9", true),
        ("ARTIFACTS.internal.", "10.9.9.9", true),
        ("other.internal", "10.9.9.9", false),
        ("a.corp.example", "192.168.1.1", true),
        ("a.b.corp.example", "192.168.1.1", true),
        ("corp.example", "192.168.1.1", false),
        ("evilcorp.example", "192.168.1.1", false),
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(policy.allows(host, ip), allowed, "{host} {ip}");
    }
}

#[test]
fn cidrs_and_host_patterns_parse_or_say_why_not() {
    for (text, shown) in [
        ("10.0.0.0/8", "10.0.0.0/8"),
        (" 192.168.1.7 ", "192.168.1.7/32"),
        ("fd00::/8", "fd00::/8"),
        ("[fd00::1]", "fd00::1/128"),
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ("0.0.0.0/0", "0.0.0.0/0"),
    ] {
        assert_eq!(text.parse::<Cidr>().unwrap().to_string(), shown, "{text}");
    }
    for bad in [
        "10.0.0.0/33",
        "fd00::/129",
        "10.0.0/8",
        "example.com",
        "",
        "1.2.3.4/x",
    ] {
        let err = bad.parse::<Cidr>().unwrap_err();
        assert!(err.contains(bad.trim()), "{bad}: {err}");
    }
    for bad in ["", "*.", "a b", "http://x", "*"] {
        assert!(bad.parse::<HostPattern>().is_err(), "{bad}");
    }
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains("8.8.8.8".parse().unwrap()));
    assert!(!all.contains("::1".parse().unwrap()));
}
