//! Unit tests of the fetch checks: URLs refused before any connection, literal encodings,
//! the fixed error vocabulary and the body meter.

use super::*;
use deposito_api::ErrorCode;

fn policy() -> Policy {
    Policy::default()
}

#[tokio::test]
async fn urls_that_are_not_http_are_bad_requests() {
    for bad in [
        "ftp://example.com/x",
        "not a url",
        "file:///etc/passwd",
        "http://",
    ] {
        assert!(
            matches!(resolve(bad, &policy()).await, Err(Error::BadRequest(_))),
            "{bad}"
        );
    }
}

/// Every literal spelling of a refused address is refused: the URL parser turns decimal,
/// octal, hex and short forms into the address they are before the guard looks.
#[tokio::test]
async fn refused_literals_in_every_encoding() {
    for (url, normalised) in [
        ("http://127.0.0.1:1/x", "127.0.0.1"),
        ("http://2130706433/", "127.0.0.1"),
        ("http://0177.0.0.1/", "127.0.0.1"),
        ("http://0x7f.0.0.1/", "127.0.0.1"),
        ("http://0x7f000001/", "127.0.0.1"),
        ("http://017700000001/", "127.0.0.1"),
        ("http://127.1/", "127.0.0.1"),
        ("http://127.0.1/", "127.0.0.1"),
        ("http://0/", "0.0.0.0"),
        ("http://0x0/", "0.0.0.0"),
        ("http://2852039166/latest/meta-data", "169.254.169.254"),
        ("http://0xa9.0xfe.0xa9.0xfe/", "169.254.169.254"),
        ("http://0251.0376.0251.0376/", "169.254.169.254"),
        ("http://169.254.43518/", "169.254.169.254"),
        ("http://10.1/", "10.0.0.1"),
        ("http://167772161/", "10.0.0.1"),
        ("http://192.168.1.1./", "192.168.1.1"),
        ("HTTP://[::1]/", "[::1]"),
        ("http://[0:0:0:0:0:0:0:1]/", "[::1]"),
        ("http://[::ffff:127.0.0.1]/", "[::ffff:7f00:1]"),
        ("http://[::ffff:7f00:1]/", "[::ffff:7f00:1]"),
        ("http://[::127.0.0.1]/", "[::7f00:1]"),
        ("http://[64:ff9b::169.254.169.254]/", "[64:ff9b::a9fe:a9fe]"),
        ("http://[2002:a9fe:a9fe::1]/", "[2002:a9fe:a9fe::1]"),
        ("http://[fe80::1%25eth0]/", ""),
        ("http://[fd00::1]:8080/", "[fd00::1]"),
        ("https://[ff02::1]/", "[ff02::1]"),
        ("http://100.64.0.1/", "100.64.0.1"),
        ("http://user:pw@127.0.0.1/", "127.0.0.1"),
    ] {
        if !normalised.is_empty() {
            let parsed = reqwest::Url::parse(url).unwrap();
            assert_eq!(parsed.host_str(), Some(normalised), "{url}");
        }
        match resolve(url, &policy()).await {
            Err(Error::FetchRefused(Reason::AddressNotAllowed)) => {}
            // A zone id is not a valid URL host: refused as well.
            Err(Error::BadRequest(_)) if url.contains('%') => {}
            other => panic!("{url}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_name_resolving_to_a_refused_address_is_refused() {
    match resolve("http://localhost:9/", &policy()).await {
        Err(e @ Error::FetchRefused(Reason::AddressNotAllowed)) => {
            assert_eq!(e.status(), axum::http::StatusCode::FORBIDDEN);
            assert_eq!(e.code(), ErrorCode::FetchRefused);
            assert_eq!(e.to_string(), "fetch refused: address not allowed");
        }
        other => panic!("localhost: {other:?}"),
    }
    // Allowed by name, whatever it resolves to.
    let by_name = Policy {
        allow_hosts: vec!["LocalHost".parse().unwrap()],
        ..Policy::default()
    };
    let target = resolve("http://localhost:9/", &by_name).await.unwrap();
    assert!(target.addrs.iter().all(|a| a.ip().is_loopback()));
    assert!(!target.literal);
}

#[tokio::test]
async fn the_allow_lists_and_allow_private_let_addresses_through() {
    let cidr = Policy {
        allow_cidrs: vec!["127.0.0.0/8".parse().unwrap()],
        ..Policy::default()
    };
    let target = resolve("http://2130706433:1/x", &cidr).await.unwrap();
    assert_eq!(target.addrs, vec!["127.0.0.1:1".parse().unwrap()]);
    assert!(target.literal);
    assert!(matches!(
        resolve("http://[::1]:1/", &cidr).await,
        Err(Error::FetchRefused(_))
    ));
    assert!(matches!(
        resolve("http://169.254.169.254/", &cidr).await,
        Err(Error::FetchRefused(_))
    ));
    let private = Policy {
        allow_private: true,
        ..Policy::default()
    };
    for url in [
        "http://127.0.0.1:1/x",
        "http://169.254.169.254/",
        "http://[::1]/",
    ] {
        assert!(resolve(url, &private).await.is_ok(), "{url}");
    }
}

#[test]
fn reasons_are_short_and_fixed() {
    for (reason, text) in [
        (Reason::AddressNotAllowed, "address not allowed"),
        (Reason::DoesNotResolve, "host does not resolve"),
        (Reason::ConnectionRefused, "connection refused"),
        (Reason::Unreachable, "host unreachable"),
        (Reason::CannotConnect, "cannot connect"),
        (Reason::NoResponse, "no response"),
        (Reason::Http(404), "HTTP 404"),
        (Reason::TimedOut, "timed out"),
        (Reason::TooSlow, "too slow"),
        (Reason::TooLarge, "too large"),
        (Reason::CutShort, "cut short"),
    ] {
        assert_eq!(reason.to_string(), text);
        let failed = Error::FetchFailed(reason);
        assert_eq!(failed.status(), axum::http::StatusCode::BAD_GATEWAY);
        assert_eq!(failed.body().error, format!("fetch failed: {text}"));
    }
}

fn meter(
    chunks: Vec<&'static [u8]>,
    cap: u64,
    deadline: Duration,
) -> impl Stream<Item = Result<Bytes>> {
    let body = futures::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, reqwest::Error>(Bytes::from_static(c))),
    );
    Meter {
        body: Box::pin(body),
        cap,
        received: 0,
        deadline: Instant::now() + deadline,
        window: Duration::from_secs(60),
        min_per_window: 0,
        window_start: Instant::now(),
        window_bytes: 0,
        done: false,
    }
    .into_stream()
}

#[tokio::test]
async fn the_meter_passes_a_body_up_to_the_cap_and_stops_past_it() {
    let all: Vec<_> = meter(vec![b"abc", b"def"], 6, Duration::from_secs(5))
        .collect()
        .await;
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(Result::is_ok));
    let over: Vec<_> = meter(vec![b"abc", b"defg", b"h"], 6, Duration::from_secs(5))
        .collect()
        .await;
    assert_eq!(over.len(), 2, "the body ends at the first failure");
    assert!(matches!(over[1], Err(Error::FetchFailed(Reason::TooLarge))));
}

#[tokio::test(start_paused = true)]
async fn the_meter_stops_at_the_deadline() {
    let endless = futures::stream::pending::<reqwest::Result<Bytes>>();
    let m = Meter {
        body: Box::pin(endless),
        cap: 100,
        received: 0,
        deadline: Instant::now() + Duration::from_secs(3),
        window: Duration::from_secs(60),
        min_per_window: 0,
        window_start: Instant::now(),
        window_bytes: 0,
        done: false,
    };
    let all: Vec<_> = m.into_stream().collect().await;
    assert_eq!(all.len(), 1);
    assert!(matches!(all[0], Err(Error::FetchFailed(Reason::TimedOut))));
}

#[test]
fn flags_parse_lists_and_defaults() {
    use clap::Parser;
    let cfg = crate::config::Config::parse_from([
        "deposito-replica",
        "--fetch-allow-cidr",
        "10.0.0.0/8,fd00::/8",
        "--fetch-allow-cidr",
        "127.0.0.1",
        "--fetch-allow-host",
        "*.internal",
    ]);
    let f = &cfg.fetch;
    assert_eq!(f.fetch_allow_cidr.len(), 3);
    assert_eq!(f.fetch_allow_host.len(), 1);
    assert!(!f.fetch_allow_private);
    assert_eq!(f.fetch_max_bytes, 10 << 30);
    assert_eq!(f.fetch_deadline_secs, 3600);
    assert_eq!(f.fetch_idle_secs, 60);
    assert_eq!(f.fetch_min_bytes_per_sec, 1024);
    let bad = crate::config::Config::try_parse_from([
        "deposito-replica",
        "--fetch-allow-cidr",
        "10.0.0.0/40",
    ]);
    assert!(bad.is_err());
}
