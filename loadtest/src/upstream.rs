//! A fixed upstream for the load runs: every request gets the same 1 KiB page, so usher's
//! cost is what is measured, not the mailbox's. A WebSocket upgrade is accepted (101) and
//! the tunnel echoes what it gets until the client leaves, so the attack runs can hold
//! tunnels through usher.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, HeaderValue, UPGRADE};
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::sync::Arc;

/// The page: 1 KiB of HTML.
pub fn page() -> Bytes {
    let mut body = String::from("<!doctype html><title>mailbox</title><p>Your inbox.</p>\n");
    while body.len() < 1024 {
        body.push_str("<!-- padding to one kibibyte -->\n");
    }
    body.truncate(1024);
    Bytes::from(body)
}

/// Serves the page on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener) {
    let page = page();
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let (builder, page) = (builder.clone(), page.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                if req.headers().contains_key(UPGRADE) {
                    let upgrade = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        if let Ok(upgraded) = upgrade.await {
                            let (mut read, mut write) = tokio::io::split(TokioIo::new(upgraded));
                            let _ = tokio::io::copy(&mut read, &mut write).await;
                        }
                    });
                    let mut response = Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                    response.headers_mut().insert(UPGRADE, HeaderValue::from_static("websocket"));
                    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("upgrade"));
                    return std::future::ready(Ok::<_, Infallible>(response));
                }
                let mut response = Response::new(Full::new(page.clone()));
                *response.status_mut() = StatusCode::OK;
                response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
                std::future::ready(Ok::<_, Infallible>(response))
            });
            let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await;
        });
    }
}
