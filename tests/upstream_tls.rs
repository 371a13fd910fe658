//! TLS to the upstream (issue 20, DESIGN §7): usher verifies the mailbox's certificate against
//! the configured CA, sends SNI, speaks HTTP/2 when ALPN agrees, presents a client certificate
//! for mutual TLS, and answers 502 (with the reason logged) when verification fails, never
//! falling back to plain text.

mod support;

use http::StatusCode;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use support::*;
use tokio::net::TcpListener;

/// A test CA with one server certificate for `localhost` and one client certificate, as PEM
/// files in a temporary directory.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    dir: TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = TempDir::new("upstream-tls");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Each CA its own name, so that another CA's certificate is an unknown issuer.
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, dir.path().display().to_string());
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key")).expect("CA");
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().expect("leaf key");
            let cert = CertificateParams::new(names).expect("leaf params").signed_by(&key, &ca).expect("sign");
            (cert.pem(), key.serialize_pem())
        };
        let (server_pem, server_key_pem) = leaf(vec!["localhost".into()]);
        let (client_pem, client_key_pem) = leaf(vec!["usher.test".into()]);
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write a PEM file");
            path
        };
        Self {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_pem),
            server_key: write("server-key.pem", &server_key_pem),
            client_cert: write("client.pem", &client_pem),
            client_key: write("client-key.pem", &client_key_pem),
            dir,
        }
    }
}

/// A TLS mailbox offering h2 and http/1.1 by ALPN; it answers with the HTTP version it saw and
/// whether the peer presented a client certificate. With `require_client_cert`, a peer
/// without one signed by the test CA fails the handshake.
async fn tls_mailbox(pki: &Pki, require_client_cert: bool) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&pki.server_cert).expect("cert").collect::<Result<_, _>>().expect("certs");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&pki.server_key).expect("key");
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&pki.ca).expect("ca") {
            roots.add(cert.expect("ca cert")).expect("trust the CA");
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("client verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(certs, key).expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the mailbox");
    let addr = listener.local_addr().expect("mailbox address");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let mtls = tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                let service = service_fn(move |req: http::Request<Incoming>| async move {
                    let body = format!("{:?} {} mtls={mtls}", req.version(), req.uri().path());
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body))))
                });
                let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    addr
}

fn usher_to(mailbox: SocketAddr, upstream_lines: &str) -> UsherProcess {
    UsherProcess::spawn(&binary_config(&[mailbox], "", upstream_lines), Logs::Text, &[])
}

fn tls_lines(pki: &Pki, extra: &str) -> String {
    format!("tls = true\nserver_name = \"localhost\"\nca_file = {:?}\n{extra}", pki.ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_over_tls_with_http1() {
    let pki = Pki::new();
    let mailbox = tls_mailbox(&pki, false).await;
    let usher = usher_to(mailbox, &tls_lines(&pki, "protocol = \"http1\""));
    for _ in 0..3 {
        let reply = http1(usher.http_addr, get("/inbox")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.text(), "HTTP/1.1 /inbox mtls=false");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_over_tls_with_http2_when_alpn_agrees() {
    let pki = Pki::new();
    let mailbox = tls_mailbox(&pki, false).await;
    let usher = usher_to(mailbox, &tls_lines(&pki, "protocol = \"auto\""));
    let replies =
        futures_util::future::join_all((0..4).map(|i| http1(usher.http_addr, get(&format!("/letter/{i}"))))).await;
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.text(), format!("HTTP/2.0 /letter/{i} mtls=false"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_a_502_with_the_reason_logged() {
    let pki = Pki::new();
    let other = Pki::new();
    let mailbox = tls_mailbox(&pki, false).await;
    let mut usher = usher_to(mailbox, &tls_lines(&other, ""));
    // From an address of its own, so that any trace of it in the logs can be told apart.
    const CLIENT: &str = "127.9.8.7";
    let client: std::net::IpAddr = CLIENT.parse().expect("client address");
    let reply = http1_from(client, usher.http_addr, get("/inbox")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    // The log line may still be on its way through the pipe: stop usher and read them all.
    usher.signal("TERM");
    assert_eq!(usher.exit_status().await.code(), Some(0));
    let logs = usher.logs();
    assert!(
        logs.iter().any(|line| line.contains("upstream TLS handshake failed") && line.contains("UnknownIssuer")),
        "no log line names the reason:\n{}",
        logs.join("\n")
    );
    assert!(!logs.iter().any(|line| line.contains(CLIENT)), "the client's address was logged:\n{}", logs.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_requiring_mutual_tls_accepts_usher_with_its_client_certificate() {
    let pki = Pki::new();
    let mailbox = tls_mailbox(&pki, true).await;
    let client = format!("client_cert = {:?}\nclient_key = {:?}", pki.client_cert, pki.client_key);
    let usher = usher_to(mailbox, &tls_lines(&pki, &client));
    let reply = http1(usher.http_addr, get("/inbox")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(reply.text().ends_with("/inbox mtls=true"), "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_requiring_mutual_tls_refuses_usher_without_one() {
    let pki = Pki::new();
    let mailbox = tls_mailbox(&pki, true).await;
    let usher = usher_to(mailbox, &tls_lines(&pki, ""));
    let reply = http1(usher.http_addr, get("/inbox")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
}

#[test]
fn config_errors_name_the_key() {
    let pki = Pki::new();
    let missing = pki.dir.path().join("missing.pem");
    let cases = [
        ("tls = true\nprotocol = \"h3\"".to_string(), "upstream.protocol"),
        (format!("tls = true\nca_file = {missing:?}"), "upstream.ca_file"),
        (format!("tls = true\nca_file = {:?}\nclient_cert = {:?}", pki.ca, pki.client_cert), "upstream.client_key"),
        (format!("ca_file = {:?}", pki.ca), "upstream.ca_file"),
        ("tls = true\nserver_name = \"not a name\"".to_string(), "upstream.server_name"),
    ];
    for (lines, key) in cases {
        let text = binary_config(&["127.0.0.1:1".parse().expect("addr")], "", &lines);
        let errors = match usher::config::Config::parse(&text) {
            Ok(_) => panic!("accepted:\n{lines}"),
            Err(e) => e.to_string(),
        };
        assert!(errors.contains(key), "{lines}\n→ {errors}");
    }
}

/// A plain-text mailbox speaking HTTP/2 only (prior knowledge, no TLS, no upgrade).
async fn h2c_mailbox() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the mailbox");
    let addr = listener.local_addr().expect("mailbox address");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = service_fn(|req: http::Request<Incoming>| async move {
                    let body = format!("{:?} {}", req.version(), req.uri().path());
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_without_tls_is_h2c_with_prior_knowledge() {
    let usher = usher_to(h2c_mailbox().await, "protocol = \"http2\"");
    let replies =
        futures_util::future::join_all((0..4).map(|i| http1(usher.http_addr, get(&format!("/letter/{i}"))))).await;
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.text(), format!("HTTP/2.0 /letter/{i}"));
    }
    // The same mailbox is no HTTP/1.1 server: with the default protocol usher cannot use it.
    let http1_only = usher_to(h2c_mailbox().await, "");
    assert_eq!(http1(http1_only.http_addr, get("/inbox")).await.status, StatusCode::BAD_GATEWAY);
}
