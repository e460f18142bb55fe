//! Unit tests of the request limits: the body cap, the deadline, the minimum rate of uploads
//! and of downloads.

use super::*;
use axum::routing::{get, post};
use tower::ServiceExt;

const LIMITS: RequestLimits = RequestLimits {
    max_body_bytes: 1024,
    deadline: Duration::from_millis(300),
    min_rate: MinRate {
        bytes: 1000,
        window: Duration::from_millis(200),
    },
};

fn classify(_: &Method, path: &str) -> RouteClass {
    match path {
        "/stream" => RouteClass::Stream,
        "/long" => RouteClass::Long,
        _ => RouteClass::Bounded,
    }
}

fn app() -> Router {
    let echo = |body: Bytes| async move { body };
    let read_all = |body: Body| async move {
        match body.collect().await {
            Ok(all) => format!("{}", all.to_bytes().len()),
            Err(err) => format!("error: {err}"),
        }
    };
    let router = Router::new()
        .route("/json", post(echo))
        .route("/long", post(echo))
        .route("/stream", post(read_all))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
    apply(router, LIMITS, classify)
}

async fn send(req: Request) -> (StatusCode, String) {
    let resp = app().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn post_to(path: &str, body: Body) -> Request {
    Request::post(path).body(body).unwrap()
}

/// A body of `chunks` chunks of `size` bytes, one every `every`.
fn trickle(chunks: usize, size: usize, every: Duration) -> Body {
    let stream = futures::stream::unfold(0, move |i| async move {
        if i == chunks {
            return None;
        }
        tokio::time::sleep(every).await;
        Some((
            Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; size])),
            i + 1,
        ))
    });
    Body::from_stream(stream)
}

fn code_of(body: &str) -> String {
    let parsed: ErrorBody = serde_json::from_str(body).unwrap();
    parsed.code.as_str().to_string()
}

#[tokio::test]
async fn small_bodies_pass_and_large_ones_get_413_by_length_or_as_they_arrive() {
    let (status, body) = send(post_to("/json", Body::from("{\"a\":1}"))).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "{\"a\":1}"));
    let (status, body) = send(post_to("/json", Body::from(vec![b'x'; 1025]))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(code_of(&body), "payload_too_large");
    // No Content-Length: counted as it arrives.
    let (status, body) = send(post_to("/long", trickle(3, 500, Duration::ZERO))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(code_of(&body), "payload_too_large");
    // The streaming route takes any size.
    let (status, body) = send(post_to("/stream", Body::from(vec![b'x'; 100_000]))).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "100000"));
}

#[tokio::test]
async fn bounded_requests_get_408_past_the_deadline_and_long_ones_only_for_the_body() {
    let (status, body) = send(Request::get("/slow").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(code_of(&body), "request_timeout");
    // A body that takes longer than the deadline to arrive.
    let (status, body) = send(post_to("/long", trickle(2, 10, Duration::from_millis(400)))).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{body}");
}

#[tokio::test]
async fn an_upload_below_the_minimum_rate_is_cut_off_and_a_fast_one_is_not() {
    // 100 bytes every 100 ms: 200 per 200 ms window, under 1000.
    let (status, body) = send(post_to(
        "/stream",
        trickle(20, 100, Duration::from_millis(100)),
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.starts_with("error: ") && body.contains("minimum rate"),
        "{body}"
    );
    // 2000 bytes every 100 ms passes, however long it takes.
    let (status, body) = send(post_to(
        "/stream",
        trickle(6, 2000, Duration::from_millis(100)),
    ))
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "12000"));
}

#[tokio::test]
async fn time_the_server_spends_busy_is_not_charged_to_the_client() {
    let mut clock = RateClock::new(LIMITS.min_rate);
    // Busy for three windows between frames (never pending): no error.
    clock.progress(10).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    clock.progress(10).unwrap();
    assert_eq!(clock.waited, Duration::ZERO);
}

#[tokio::test]
async fn a_client_that_does_not_read_its_download_is_cut_off() {
    let (server, client) = tokio::io::duplex(4096);
    let mut guard = SlowWriteGuard::new(server, LIMITS.min_rate);
    let write = async {
        use tokio::io::AsyncWriteExt;
        let chunk = vec![0u8; 1024];
        loop {
            if let Err(err) = guard.write_all(&chunk).await {
                return err;
            }
        }
    };
    let err = tokio::time::timeout(Duration::from_secs(5), write)
        .await
        .expect("cut off within the window");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    // A reader that keeps up is never cut off.
    let (server, mut reader) = tokio::io::duplex(4096);
    let mut guard = SlowWriteGuard::new(server, LIMITS.min_rate);
    let drain =
        tokio::spawn(async move { tokio::io::copy(&mut reader, &mut tokio::io::sink()).await });
    use tokio::io::AsyncWriteExt;
    for _ in 0..2000 {
        guard.write_all(&[1u8; 1024]).await.unwrap();
    }
    drop(guard);
    assert_eq!(drain.await.unwrap().unwrap(), 2000 * 1024);
    drop(client);
}
