//! A fixed upstream for the load runs: every request gets the same 1 KiB page, so usher's
//! cost is what is measured, not the mailbox's.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
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
            let service = hyper::service::service_fn(move |_req| {
                let mut response = Response::new(Full::new(page.clone()));
                *response.status_mut() = StatusCode::OK;
                response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
