//! An upstream that misbehaves on purpose, on real sockets (raw TCP, no HTTP library, so
//! every fault is exactly what the socket does): slow, half-open, resetting at once or in the
//! middle of a body, or healthy. The fault can be changed while it runs; each connection
//! keeps the fault in force when it was accepted, as a broken server's connections would.
//!
//! Every answer it gives carries `x-upstream: faulty`, so a test tells its answers from
//! usher's own ([`Reply::forwarded`](super::client::Reply::forwarded)).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the upstream treats the connections it accepts from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Answers every request `200 ok` on a kept-alive connection.
    Healthy = 0,
    /// Reads the request, then answers only after [`SLOW`].
    Slow = 1,
    /// Accepts the connection and holds it, never reading or writing (a hung process whose
    /// kernel still completes handshakes).
    HalfOpen = 2,
    /// Resets the connection as soon as it is accepted (`SO_LINGER` 0, then close: an RST).
    Reset = 3,
    /// Reads the request, sends a `200` head announcing [`CUT_BODY_LENGTH`] bytes and the
    /// first KiB of them, then resets the connection.
    ResetMidBody = 4,
}

impl Fault {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Fault::Slow,
            2 => Fault::HalfOpen,
            3 => Fault::Reset,
            4 => Fault::ResetMidBody,
            _ => Fault::Healthy,
        }
    }
}

/// How long a [`Fault::Slow`] upstream takes to answer: far beyond any response timeout a
/// test sets.
pub const SLOW: Duration = Duration::from_secs(20);

/// The body length a [`Fault::ResetMidBody`] answer announces, of which 1 KiB is sent.
pub const CUT_BODY_LENGTH: usize = 1 << 20;

const OK_ANSWER: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\nx-upstream: faulty\r\n\r\nok\n";

/// A running faulty upstream on 127.0.0.1:0; stops accepting when dropped.
pub struct FaultyUpstream {
    pub addr: SocketAddr,
    fault: Arc<AtomicU8>,
    accepted: Arc<AtomicUsize>,
    /// The connections a [`Fault::HalfOpen`] upstream holds, unread, until the peer closes them.
    held: Arc<Mutex<Vec<TcpStream>>>,
    /// How many connections it has held, and how many of them the peer has closed.
    held_total: Arc<AtomicUsize>,
    held_closed: AtomicUsize,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FaultyUpstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FaultyUpstream {
    /// Binds 127.0.0.1:0 and serves with `fault` on the current tokio runtime.
    pub async fn start(fault: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the faulty upstream");
        let addr = listener.local_addr().expect("faulty upstream address");
        let fault = Arc::new(AtomicU8::new(fault as u8));
        let accepted = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(Mutex::new(Vec::new()));
        let held_total = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn(serve(listener, fault.clone(), accepted.clone(), held.clone(), held_total.clone()));
        Self { addr, fault, accepted, held, held_total, held_closed: AtomicUsize::new(0), accept }
    }

    /// Connections accepted from now on get `fault`.
    pub fn set(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// How many connections a half-open upstream has held, and how many of them the peer
    /// (usher) has closed so far: a closed one reads to its end (or a reset) at once. Reads
    /// only what is there; a closed connection is let go.
    pub async fn held_closed(&self) -> (usize, usize) {
        let held: Vec<TcpStream> = std::mem::take(&mut *self.held.lock().expect("held lock"));
        let mut still_open = Vec::new();
        for mut stream in held {
            let mut buf = [0u8; 4096];
            let closed = loop {
                match tokio::time::timeout(Duration::from_millis(20), stream.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break true,
                    Ok(Ok(_)) => continue,
                    Err(_) => break false,
                }
            };
            if closed {
                self.held_closed.fetch_add(1, Ordering::SeqCst);
            } else {
                still_open.push(stream);
            }
        }
        self.held.lock().expect("held lock").extend(still_open);
        (self.held_total.load(Ordering::SeqCst), self.held_closed.load(Ordering::SeqCst))
    }
}

async fn serve(
    listener: TcpListener,
    fault: Arc<AtomicU8>,
    accepted: Arc<AtomicUsize>,
    held: Arc<Mutex<Vec<TcpStream>>>,
    held_total: Arc<AtomicUsize>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        accepted.fetch_add(1, Ordering::SeqCst);
        match Fault::from_u8(fault.load(Ordering::SeqCst)) {
            Fault::HalfOpen => {
                held_total.fetch_add(1, Ordering::SeqCst);
                held.lock().expect("held lock").push(stream);
            }
            Fault::Reset => reset(stream),
            other => {
                tokio::spawn(answer(stream, other));
            }
        }
    }
}

/// Closes with `SO_LINGER` 0: the kernel sends an RST instead of a FIN.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Serves one connection with a fault that reads requests first.
async fn answer(mut stream: TcpStream, fault: Fault) {
    let mut buf = Vec::new();
    while read_head(&mut stream, &mut buf).await {
        match fault {
            Fault::Slow => {
                tokio::time::sleep(SLOW).await;
                let _ = stream.write_all(OK_ANSWER).await;
                return;
            }
            Fault::ResetMidBody => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {CUT_BODY_LENGTH}\r\nx-upstream: faulty\r\n\r\n"
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&[b'x'; 1024]).await;
                reset(stream);
                return;
            }
            _ => {
                if stream.write_all(OK_ANSWER).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads up to the end of the next request head (requests here have no body); false when
/// the connection ends first. Bytes after the head stay in `buf`.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            return true;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
