//! Who the client is (DESIGN §2): the peer, or who a trusted proxy says it is, by
//! `X-Forwarded-For`, `Forwarded` or PROXY protocol v2; and what reaches the upstream.

mod support;

use http::Request;
use std::net::{IpAddr, SocketAddr};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use usher::config::{Config, RealIpFrom};

/// usher in front of `upstream`, sending the client address upstream so tests can see which
/// address usher believed.
fn usher_telling(upstream: &Upstream, trusted: &[&str]) -> usher::Running {
    usher_believing(upstream, trusted, RealIpFrom::XForwardedFor)
}

/// usher believing `from` from peers in `trusted`, forwarding the address it believed.
fn usher_believing(upstream: &Upstream, trusted: &[&str], from: RealIpFrom) -> usher::Running {
    let mut config = Config::for_upstream(upstream.addr);
    config.upstream.forward_client_ip = true;
    config.client.trusted_proxies = trusted.iter().map(|n| n.parse().expect("cidr")).collect();
    config.client.real_ip_from = from;
    start_usher(config)
}

fn get_with(headers: &[(&str, &str)]) -> Request<ReqBody> {
    let mut req = Request::get("/who").body(empty()).expect("request");
    for (k, v) in headers {
        req.headers_mut().append(http::HeaderName::from_bytes(k.as_bytes()).expect("name"), v.parse().expect("value"));
    }
    req
}

async fn believed(usher: &usher::Running, source: IpAddr, headers: &[(&str, &str)]) -> Vec<String> {
    let echo = http1_from(source, http_addr(usher), get_with(headers)).await.echo();
    echo.all("x-forwarded-for").into_iter().map(String::from).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored_and_stripped() {
    let upstream = Upstream::start().await;
    let usher = usher_telling(&upstream, &["10.0.0.0/8"]);
    let headers = [("x-forwarded-for", "6.6.6.6"), ("forwarded", "for=7.7.7.7"), ("x-real-ip", "8.8.8.8")];
    assert_eq!(believed(&usher, CLIENT_IP, &headers).await, vec![CLIENT_IP.to_string()]);
    let echo = http1_from(CLIENT_IP, http_addr(&usher), get_with(&headers)).await.echo();
    assert!(echo.header("forwarded").is_none() && echo.header("x-real-ip").is_none(), "{:?}", echo.headers);

    // And with forwarding off (the default), no address header reaches the upstream at all.
    let quiet = usher_for(&upstream);
    let echo = http1_from(CLIENT_IP, http_addr(&quiet), get_with(&headers)).await.echo();
    for name in ["x-forwarded-for", "forwarded", "x-real-ip"] {
        assert!(echo.header(name).is_none(), "{name} reached the upstream: {:?}", echo.headers);
    }
    usher.stop();
    quiet.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_a_trusted_peer_the_rightmost_untrusted_address_is_the_client() {
    let upstream = Upstream::start().await;
    let usher = usher_telling(&upstream, &["127.0.0.0/8", "10.0.0.0/8"]);
    let one_proxy = [("x-forwarded-for", "6.6.6.6, 203.0.113.5")];
    assert_eq!(believed(&usher, CLIENT_IP, &one_proxy).await, vec!["203.0.113.5"]);
    let chain = [("x-forwarded-for", "6.6.6.6, 198.51.100.9, 10.1.1.1"), ("x-forwarded-for", "10.2.2.2")];
    assert_eq!(believed(&usher, CLIENT_IP, &chain).await, vec!["198.51.100.9"]);
    let forwarded = [("forwarded", r#"for=192.0.2.1, for="[2001:db8:cafe::17]:4711";proto=https, for=10.3.3.3"#)];
    // Believing X-Forwarded-For, a Forwarded header is the client's own word: ignored.
    assert_eq!(believed(&usher, CLIENT_IP, &forwarded).await, vec![CLIENT_IP.to_string()]);
    let garbage = [("x-forwarded-for", "203.0.113.5, not-an-address")];
    assert_eq!(believed(&usher, CLIENT_IP, &garbage).await, vec![CLIENT_IP.to_string()]);
    usher.stop();
    let usher = usher_believing(&upstream, &["127.0.0.0/8", "10.0.0.0/8"], RealIpFrom::Forwarded);
    assert_eq!(believed(&usher, CLIENT_IP, &forwarded).await, vec!["2001:db8:cafe::17"]);
    assert_eq!(believed(&usher, CLIENT_IP, &one_proxy).await, vec![CLIENT_IP.to_string()], "XFF ignored");
    usher.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_in_one_ipv6_64_share_a_key_and_other_64s_do_not() {
    // Distinct IPv6 clients arrive through a trusted proxy (the test machine has only ::1),
    // and the request limit shows whose key is whose.
    let upstream = Upstream::start().await;
    let mut config = Config::for_upstream(upstream.addr);
    config.client.trusted_proxies = vec!["127.0.0.0/8".parse().expect("cidr")];
    config.limits.requests_per_second = 1;
    config.limits.burst = 2;
    let usher = start_usher(config);
    let addr = http_addr(&usher);
    let from = |xff: &'static str| async move {
        http1_from(CLIENT_IP, addr, get_with(&[("x-forwarded-for", xff)])).await.status.as_u16()
    };
    assert_eq!(from("2001:db8:1:2::1").await, 200);
    assert_eq!(from("2001:db8:1:2:ffff:ffff:ffff:ffff").await, 200);
    assert_eq!(from("2001:db8:1:2::abcd").await, 429, "the third request from the same /64 is over the burst");
    assert_eq!(from("2001:db8:1:3::1").await, 200, "the next /64 is another client");
    usher.stop();
}

fn proxy_listener_config(upstream: &Upstream, trusted: &str) -> Config {
    let mut config = Config::for_upstream(upstream.addr);
    config.upstream.forward_client_ip = true;
    config.listen.proxy_protocol = true;
    config.client.trusted_proxies = vec![trusted.parse().expect("cidr")];
    config
}

async fn request_after(header: Vec<u8>, source: IpAddr, addr: SocketAddr) -> String {
    let mut stream = connect_from(source, addr).await;
    let mut bytes = header;
    bytes.extend_from_slice(b"GET /who HTTP/1.1\r\nHost: usher\r\nConnection: close\r\n\r\n");
    // usher may answer and close before all of it is written (a rejected header): the
    // answer is still there to read.
    if let Err(e) = stream.write_all(&bytes).await {
        assert!(matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset), "{e}");
    }
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer).await {
        Ok(_) => {}
        // Closing with our request unread resets the connection: also "no answer".
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("read answer: {e}"),
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v2_from_a_trusted_proxy_names_the_client() {
    let upstream = Upstream::start().await;
    let usher = start_usher(proxy_listener_config(&upstream, "127.0.0.0/8"));
    let addr = http_addr(&usher);
    let header = usher::proxy_protocol::encode_v2("192.0.2.33:51000".parse().expect("addr"), addr);
    let answer = request_after(header, CLIENT_IP, addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#"["x-forwarded-for","192.0.2.33"]"#), "{answer}");

    let v6 = usher::proxy_protocol::encode_v2("[2001:db8::33]:443".parse().expect("addr"), addr);
    let answer = request_after(v6, CLIENT_IP, addr).await;
    assert!(answer.contains(r#"["x-forwarded-for","2001:db8::33"]"#), "{answer}");

    // Without the header, a proxy-protocol listener closes the connection unanswered.
    let answer = request_after(Vec::new(), CLIENT_IP, addr).await;
    assert!(answer.is_empty(), "{answer}");
    usher.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_from_an_untrusted_peer_is_not_believed() {
    let upstream = Upstream::start().await;
    let usher = start_usher(proxy_listener_config(&upstream, "127.0.0.1/32"));
    let addr = http_addr(&usher);
    let header = usher::proxy_protocol::encode_v2("192.0.2.33:51000".parse().expect("addr"), addr);
    let answer = request_after(header, CLIENT_IP, addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(&format!(r#"["x-forwarded-for","{CLIENT_IP}"]"#)), "{answer}");
    usher.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_header_on_a_listener_without_proxy_protocol_is_rejected() {
    let upstream = Upstream::start().await;
    let usher = usher_telling(&upstream, &["127.0.0.0/8"]);
    let addr = http_addr(&usher);
    let header = usher::proxy_protocol::encode_v2("192.0.2.33:51000".parse().expect("addr"), addr);
    let answer = request_after(header, CLIENT_IP, addr).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(http1(addr, get("/still-serving")).await.status, 200);
    assert!(upstream.seen().iter().all(|s| s.path != "/who"), "the garbage request never reached the upstream");
    usher.stop();
}
