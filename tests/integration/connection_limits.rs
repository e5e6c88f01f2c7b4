//! Connection-level limits of the real server (`TestServer`, from `Config::start`), driven with
//! raw sockets, hyper's own client and curl: handshake, first-request, header, idle and body
//! deadlines; per-source and global connection caps with eviction of the idle; the global cap on
//! requests in flight; 413 before reading with a lingering close; 431 in the envelope; the
//! HTTP/2 settings the server announces. Every wait is bounded; timeouts are set to a few
//! hundred milliseconds through the same flags an operator uses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::Request;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::pki;
use crate::support::server::TestServer;

/// Longest any single step may take before the test fails.
const BOUND: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Deadlines
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_plain_connection_that_sends_nothing_is_closed_after_the_header_read_timeout() {
    let server = TestServer::start(&["--header-read-timeout", "300ms"]).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let closed_after = time_until_closed(&mut silent).await;
    assert!(closed_after >= Duration::from_millis(250), "closed too early: {closed_after:?}");
    assert!(closed_after < Duration::from_secs(3), "closed too late: {closed_after:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_tls_connection_that_completes_the_handshake_and_sends_nothing_is_closed() {
    let server = TestServer::start(&["--enable-tls", "--header-read-timeout", "300ms"]).await;
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let mut tls = tls_connect(server.addr, alpn).await;
        let closed_after = time_until_closed(&mut tls).await;
        assert!(closed_after < Duration::from_secs(3), "ALPN {alpn:?}: closed too late: {closed_after:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn an_h2_preface_and_settings_without_any_stream_do_not_hold_the_connection() {
    let server = TestServer::start(&["--header-read-timeout", "300ms"]).await;
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    client.write_all(H2_PREFACE).await.unwrap();
    client.write_all(&settings_frame(&[])).await.unwrap();
    let closed_after = time_until_closed(&mut client).await;
    assert!(closed_after < Duration::from_secs(3), "closed too late: {closed_after:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_cut_at_the_handshake_timeout() {
    let server =
        TestServer::start(&["--enable-tls", "--tls-handshake-timeout", "300ms", "--header-read-timeout", "30s"]).await;
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    // Half a ClientHello record header, then nothing.
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let closed_after = time_until_closed(&mut stalled).await;
    assert!(closed_after < Duration::from_secs(3), "closed too late: {closed_after:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_keep_alive_connection_idle_longer_than_the_header_timeout_is_still_reused() {
    let server = TestServer::start(&["--header-read-timeout", "300ms", "--idle-timeout", "30s"]).await;
    let mut connection = Http1::connect(server.addr).await;
    assert_eq!(connection.get_ids().await, 200);
    // Longer than the header timeout: Go's client keeps idle connections for up to 90 s.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(connection.get_ids().await, 200, "the idle connection was closed");
    server.stop().await;
}

#[tokio::test]
async fn a_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = TestServer::start(&["--header-read-timeout", "5s", "--idle-timeout", "500ms"]).await;
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(b"GET /ids HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let started = Instant::now();
    let answer = read_to_close(&mut raw).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let closed_after = started.elapsed();
    assert!(closed_after >= Duration::from_millis(400), "closed before the idle timeout: {closed_after:?}");
    assert!(closed_after < Duration::from_secs(4), "closed too late: {closed_after:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_slow_second_request_head_is_cut_at_the_header_timeout_not_the_idle_timeout() {
    let server = TestServer::start(&["--header-read-timeout", "300ms", "--idle-timeout", "30s"]).await;
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(b"GET /ids HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    read_response_head(&mut raw).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    raw.write_all(b"GET /ids HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let closed_after = time_until_closed(&mut raw).await;
    assert!(closed_after < Duration::from_secs(3), "closed too late: {closed_after:?}");
    server.stop().await;
}

#[tokio::test]
async fn an_h2_connection_without_streams_gets_goaway_after_the_idle_timeout() {
    let server = TestServer::start(&["--enable-tls", "--idle-timeout", "500ms"]).await;
    let tls = tls_connect(server.addr, b"h2").await;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    let driver = tokio::spawn(connection);
    let response = sender.send_request(get("/ids")).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    let started = Instant::now();
    let ended = tokio::time::timeout(BOUND, driver).await.expect("the server closes an idle h2 connection");
    assert!(ended.unwrap().is_ok(), "closed with GOAWAY, not an error");
    assert!(started.elapsed() >= Duration::from_millis(400));
    server.stop().await;
}

#[tokio::test]
async fn a_slow_body_gets_408_in_the_envelope_with_retry_after() {
    let server = TestServer::start(&["--body-read-timeout", "300ms"]).await;
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(b"POST /identity/certificate HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"cluster\":")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_to_close(&mut raw).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    let (head, body) = answer.split_once("\r\n\r\n").expect("a complete response");
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let body: serde_json::Value = serde_json::from_str(body).expect("a JSON envelope");
    assert_eq!(body["code"], "request_timeout");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Connection slots
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_source_over_its_connection_cap_is_refused_while_another_source_is_served() {
    let server = TestServer::start(&["--max-connections-per-source", "2", "--header-read-timeout", "30s"]).await;
    let _first = TcpStream::connect(server.addr).await.unwrap();
    let _second = TcpStream::connect(server.addr).await.unwrap();
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    let closed_after = time_until_closed(&mut third).await;
    assert!(closed_after < Duration::from_secs(2), "the third connection from one source stayed open");
    let mut other = Http1::connect_from("127.0.0.2", server.addr).await;
    assert_eq!(other.get_ids().await, 200, "another source still gets a slot");
    server.stop().await;
}

#[tokio::test]
async fn when_every_slot_is_held_by_idle_connections_a_good_peer_gets_one_and_the_oldest_idle_is_closed() {
    let server = TestServer::start(&[
        "--enable-tls",
        "--max-connections",
        "4",
        "--max-connections-per-source",
        "0",
        "--header-read-timeout",
        "30s",
    ])
    .await;
    // The lockout of the issue: handshakes done, then silence.
    let mut oldest = tls_connect(server.addr, b"http/1.1").await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        idle.push(tls_connect(server.addr, b"http/1.1").await);
    }
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(3), async {
        let mut peer = Http1::over(tls_connect(server.addr, b"http/1.1").await).await;
        peer.get_ids().await
    })
    .await
    .expect("a good peer is served while idle connections hold every slot");
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    let closed = time_until_closed(&mut oldest).await;
    assert!(closed < Duration::from_secs(1), "the oldest idle connection was the one closed");
    server.stop().await;
}

#[tokio::test]
async fn over_the_in_flight_cap_a_request_gets_503_busy_at_once() {
    let server = TestServer::start(&["--max-requests-in-flight", "1", "--body-read-timeout", "5s"]).await;
    // One request in flight: its body never comes.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"POST /identity/certificate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(b"GET /ids HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let answer = read_to_close(&mut raw).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after:"), "{answer}");
    assert!(answer.contains(r#""code":"busy""#), "{answer}");
    drop(slow);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 413 and 431
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_oversized_content_length_gets_413_without_100_continue() {
    let server = TestServer::start(&[]).await;
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(
        b"POST /identity/certificate HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = read_to_close(&mut raw).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "no 100 Continue, the refusal first: {answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    assert!(answer.contains(r#""code":"payload_too_large""#), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_sends_a_large_body_anyway_reads_413_instead_of_a_reset() {
    let server = TestServer::start(&["--enable-tls"]).await;
    for (framing, size) in [("content-length", 1 << 20), ("chunked", 1 << 20), ("content-length", 10 << 20)] {
        let mut tls = tls_connect(server.addr, b"http/1.1").await;
        let body = vec![b'x'; size];
        let head = match framing {
            "chunked" => {
                "POST /identity/certificate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned()
            }
            _ => format!("POST /identity/certificate HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n"),
        };
        // What Python's requests does: write everything, then read the answer.
        let write = async {
            tls.write_all(head.as_bytes()).await?;
            if framing == "chunked" {
                for chunk in body.chunks(16 * 1024) {
                    tls.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await?;
                    tls.write_all(chunk).await?;
                    tls.write_all(b"\r\n").await?;
                }
                tls.write_all(b"0\r\n\r\n").await?;
            } else {
                tls.write_all(&body).await?;
            }
            tls.flush().await
        };
        tokio::time::timeout(BOUND, write).await.expect("bounded").expect("the server drains instead of resetting");
        let answer = read_to_close(&mut tls).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{framing} {size}: {answer}");
        assert!(answer.contains(r#""code":"payload_too_large""#), "{answer}");
    }
    server.stop().await;
}

#[tokio::test]
async fn curl_sees_413_for_a_large_body_over_http1_and_http2() {
    let Some(curl) = crate::support::tool("curl") else { return };
    let server = TestServer::start(&["--enable-tls"]).await;
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    std::fs::write(&body, vec![b'x'; 4 << 20]).unwrap();
    for version in ["--http1.1", "--http2"] {
        // curl's own --max-time bounds the run.
        let mut command = std::process::Command::new(&curl);
        command
            .args(["-sk", version, "-o", "-", "-w", "\n%{http_code}", "--max-time", "8"])
            .arg("--data-binary")
            .arg(format!("@{}", body.display()))
            .arg(format!("{}/identity/certificate", server.https_url()));
        let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("curl runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "curl {version}: {:?} {stdout}", output.status);
        assert!(stdout.ends_with("\n413"), "curl {version}: {stdout}");
        assert!(stdout.contains("payload_too_large"), "curl {version}: {stdout}");
    }
    server.stop().await;
}

#[tokio::test]
async fn large_header_sections_get_431_in_the_envelope_up_to_hyper_s_own_limit() {
    let server = TestServer::start(&[]).await;
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    let big = "a".repeat(20 * 1024);
    raw.write_all(format!("GET /ids HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let answer = read_to_close(&mut raw).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(answer.contains(r#""code":"headers_too_large""#), "{answer}");

    // Above hyper's read buffer the parser answers itself; the listener puts the envelope in.
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    let huge = "a".repeat(64 * 1024);
    let _ = raw.write_all(format!("GET /ids HTTP/1.1\r\nHost: x\r\nX-Big: {huge}\r\n\r\n").as_bytes()).await;
    let answer = read_to_close(&mut raw).await;
    assert_parser_envelope(&answer, "431", "headers_too_large");
    server.stop().await;
}

#[tokio::test]
async fn a_request_the_parser_cannot_read_gets_400_in_the_envelope_over_tcp_and_tls() {
    let server = TestServer::start(&["--enable-tls"]).await;
    for request in ["G@T /ids HTTP/1.1\r\nHost: x\r\n\r\n", "GET /ids HTTP/1.1\r\nBad Header\r\n\r\n"] {
        let mut tls = tls_connect(server.addr, b"http/1.1").await;
        tls.write_all(request.as_bytes()).await.unwrap();
        assert_parser_envelope(&read_to_close(&mut tls).await, "400", "malformed_request");
    }
    // The same connection's good requests are untouched: a 404 of the router keeps its own body.
    let mut tls = tls_connect(server.addr, b"http/1.1").await;
    tls.write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let answer = read_to_close(&mut tls).await;
    assert!(answer.starts_with("HTTP/1.1 404") && answer.contains(r#""code":"not_found""#), "{answer}");
    server.stop().await;

    let server = TestServer::start(&[]).await;
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(b"GET /ids HTTP/9.9\r\nHost: x\r\n\r\n").await.unwrap();
    assert_parser_envelope(&read_to_close(&mut raw).await, "400", "malformed_request");
    server.stop().await;
}

/// A whole parse-error answer: the status, the JSON envelope with `code`, a matching
/// `content-length`, and the connection closed.
fn assert_parser_envelope(answer: &str, status: &str, code: &str) {
    assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: application/json") && head.contains("connection: close"), "{head}");
    assert!(head.contains(&format!("content-length: {}", body.len())), "{head} / {body}");
    let json: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(json["code"], code, "{body}");
    assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

// ---------------------------------------------------------------------------------------------
// HTTP/2
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_server_announces_few_streams_small_windows_and_a_bounded_header_list() {
    let server = TestServer::start(&[]).await;
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    client.write_all(H2_PREFACE).await.unwrap();
    client.write_all(&settings_frame(&[])).await.unwrap();
    let mut header = [0u8; 9];
    tokio::time::timeout(BOUND, client.read_exact(&mut header)).await.unwrap().unwrap();
    assert_eq!(header[3], 0x4, "the server's first frame is SETTINGS");
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0u8; length];
    client.read_exact(&mut payload).await.unwrap();
    let settings: std::collections::HashMap<u16, u32> = payload
        .chunks(6)
        .map(|entry| {
            (u16::from_be_bytes([entry[0], entry[1]]), u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]))
        })
        .collect();
    assert_eq!(settings.get(&0x3), Some(&liqo_auth::server::H2_MAX_CONCURRENT_STREAMS), "{settings:?}");
    assert_eq!(settings.get(&0x3), Some(&8));
    assert_eq!(settings.get(&0x4), Some(&(64 * 1024)), "initial stream window: {settings:?}");
    assert_eq!(settings.get(&0x6), Some(&liqo_auth::server::H2_MAX_HEADER_LIST_SIZE), "{settings:?}");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn settings_frame(entries: &[(u16, u32)]) -> Vec<u8> {
    let length = entries.len() * 6;
    let mut frame = vec![(length >> 16) as u8, (length >> 8) as u8, length as u8, 0x4, 0, 0, 0, 0, 0];
    for (id, value) in entries {
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(&value.to_be_bytes());
    }
    frame
}

/// Reads (and discards) until the server closes the connection; returns how long that took.
async fn time_until_closed<S: AsyncRead + Unpin>(stream: &mut S) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(BOUND, read_all).await.expect("the server closes the connection");
    started.elapsed()
}

/// Everything the server sends until it closes, as text.
async fn read_to_close<S: AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                // A reset after the answer arrived: what was read stays valid.
                Err(_) => break,
            }
        }
    };
    tokio::time::timeout(BOUND, read_all).await.expect("the server closes the connection");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Reads one response head (`/ids` answers are small and come in one piece).
async fn read_response_head(stream: &mut TcpStream) -> String {
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(BOUND, stream.read(&mut buf)).await.unwrap().unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A TLS client (any server certificate accepted) offering `alpn`.
async fn tls_connect(addr: SocketAddr, alpn: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let config = pki::any_server_client_config(&[alpn]);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(BOUND, tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp))
        .await
        .expect("TLS handshake in time")
        .expect("TLS handshake")
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path).header("host", "localhost").body(Empty::new()).unwrap()
}

/// One HTTP/1.1 keep-alive connection driven by hyper's client.
struct Http1 {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Http1 {
    async fn connect(addr: SocketAddr) -> Self {
        Self::over(TcpStream::connect(addr).await.unwrap()).await
    }

    /// From another loopback address (`127.0.0.2`): another source as the server counts them.
    async fn connect_from(local: &str, addr: SocketAddr) -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
        Self::over(socket.connect(addr).await.unwrap()).await
    }

    async fn over<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(stream: S) -> Self {
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        Self { sender }
    }

    async fn get_ids(&mut self) -> u16 {
        tokio::time::timeout(BOUND, self.sender.ready()).await.unwrap().expect("the connection is still open");
        let response = tokio::time::timeout(BOUND, self.sender.send_request(get("/ids")))
            .await
            .unwrap()
            .expect("an answer on this connection");
        let status = response.status().as_u16();
        response.into_body().collect().await.unwrap();
        status
    }
}
