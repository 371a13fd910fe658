//! `bare-proxy LISTEN UPSTREAM [--per-core N]`: the least a hyper 1.x + hyper-util reverse
//! proxy can do, as a peer for `loadtest/compare.sh`. Every request is sent to UPSTREAM
//! (`host:port`) with a pooled hyper-util client and the bodies stream through untouched: no
//! header rewriting, no limits, no metrics. Whatever usher costs beyond this is usher's own.
//!
//! Two shapes, so a comparison can tell the cost of the architecture from the cost of the
//! work done per request:
//! - default: one multi-thread runtime, one listener, one client (pool) shared by all threads:
//!   what a first hyper proxy looks like;
//! - `--per-core N`: N threads, each with its own current-thread runtime, its own
//!   `SO_REUSEPORT` listener and its own client, sharing nothing: usher's shape (0 = one per core).

use hyper::body::Incoming;
use hyper::{Request, Uri};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

const USAGE: &str = "usage: bare-proxy LISTEN UPSTREAM [--per-core N]   (e.g. 127.0.0.1:18083 127.0.0.1:18080)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, upstream, per_core) = match args.as_slice() {
        [listen, upstream] => (listen, upstream, None),
        [listen, upstream, flag, n] if flag == "--per-core" => match n.parse::<usize>() {
            Ok(n) => (listen, upstream, Some(n)),
            Err(_) => return usage(),
        },
        _ => return usage(),
    };
    let Ok(listen) = listen.parse::<SocketAddr>() else { return usage() };
    let upstream: Arc<str> = Arc::from(upstream.as_str());
    let result = match per_core {
        None => shared(listen, upstream),
        Some(n) => {
            let n = if n == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { n };
            per_core_workers(listen, upstream, n)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

fn client() -> Client<HttpConnector, Incoming> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1024).build(connector)
}

/// One multi-thread runtime, one listener, one shared client.
fn shared(listen: SocketAddr, upstream: Arc<str>) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        serve(listener, client(), upstream).await
    })
}

/// N threads sharing nothing: own runtime, own `SO_REUSEPORT` listener, own client.
fn per_core_workers(listen: SocketAddr, upstream: Arc<str>, n: usize) -> std::io::Result<()> {
    let mut threads = Vec::with_capacity(n);
    for _ in 0..n {
        // Bound here, before any thread starts, so a bad address fails at once.
        let socket = Socket::new(Domain::for_address(listen), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&listen.into())?;
        socket.listen(4096)?;
        let socket = std::net::TcpListener::from(socket);
        let upstream = upstream.clone();
        threads.push(std::thread::spawn(move || -> std::io::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async move { serve(tokio::net::TcpListener::from_std(socket)?, client(), upstream).await })
        }));
    }
    for thread in threads {
        thread.join().map_err(|_| std::io::Error::other("worker thread panicked"))??;
    }
    Ok(())
}

async fn serve(
    listener: tokio::net::TcpListener,
    client: Client<HttpConnector, Incoming>,
    upstream: Arc<str>,
) -> std::io::Result<()> {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let (client, upstream) = (client.clone(), upstream.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                let client = client.clone();
                let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                let uri = format!("http://{upstream}{path}").parse::<Uri>();
                async move {
                    *req.uri_mut() = uri.map_err(std::io::Error::other)?;
                    client.request(req).await.map_err(std::io::Error::other)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
