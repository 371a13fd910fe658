//! Attacks that hold sockets rather than send much: slowloris (a request head that never
//! ends, one byte at a time) and a flood of WebSocket tunnels held open. Both reopen what
//! the server closes, as a real attacker does, so the pressure lasts the whole run.

use super::{Plan, Tally, connect, source, sources};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The bytes a slowloris socket trickles: a request line, then header lines without end.
const TRICKLE: &[u8] = b"GET / HTTP/1.1\r\nHost: usher\r\nX-a: b\r\nX-a: b\r\nX-a: b\r\nX-a: b\r\nX-a: b\r\nX-a: b\r\n";

/// `plan.sockets` connections from distinct loopback addresses, each sending one byte of a
/// request head every `plan.trickle`. Socket starts are spread over one trickle interval so
/// the bytes arrive evenly.
pub async fn slowloris(plan: &Plan, tally: Arc<Tally>) {
    let Ok(addresses) = sources(source::SLOWLORIS, plan.sockets) else { return };
    let mut tasks = tokio::task::JoinSet::new();
    let spread = plan.trickle.as_secs_f64() / plan.sockets.max(1) as f64;
    for i in 0..plan.sockets {
        let (tally, target, trickle) = (tally.clone(), plan.target, plan.trickle);
        let from = addresses.get(i);
        let delay = Duration::from_secs_f64(spread * i as f64);
        tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            loop {
                let Ok(mut stream) = connect(from, target).await else {
                    tally.add("connect_failed", 1);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                };
                tally.add("connected", 1);
                tally.open();
                let mut byte = 0usize;
                let mut sink = [0u8; 512];
                loop {
                    if stream.write_all(&TRICKLE[byte % TRICKLE.len()..][..1]).await.is_err() {
                        break;
                    }
                    tally.add("bytes_sent", 1);
                    byte += 1;
                    // Whatever the server answers (a 408, a close), the socket is over for it.
                    match tokio::time::timeout(trickle, stream.read(&mut sink)).await {
                        Err(_) => {}
                        Ok(_) => break,
                    }
                }
                tally.close();
                tally.add("closed_by_server", 1);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// `plan.sockets` WebSocket upgrades from distinct loopback addresses, each tunnel held open
/// and silent; a tunnel the server ends is asked for again.
pub async fn websocket(plan: &Plan, tally: Arc<Tally>) {
    let Ok(addresses) = sources(source::WEBSOCKET, plan.sockets) else { return };
    let mut tasks = tokio::task::JoinSet::new();
    // Opening is paced (about 2,000 a second) so the flood is of tunnels, not of handshakes.
    let pace = Duration::from_micros(500);
    for i in 0..plan.sockets {
        let (tally, target) = (tally.clone(), plan.target);
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {target}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            plan.path
        );
        let from = addresses.get(i);
        let delay = pace * u32::try_from(i).unwrap_or(u32::MAX);
        tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            loop {
                let Ok(mut stream) = connect(from, target).await else {
                    tally.add("connect_failed", 1);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                };
                if stream.write_all(request.as_bytes()).await.is_err() {
                    tally.add("closed_by_server", 1);
                    continue;
                }
                match response_head(&mut stream).await {
                    Some(head) if head.starts_with(b"HTTP/1.1 101") => {
                        tally.add("upgraded", 1);
                        tally.open();
                        let mut sink = [0u8; 512];
                        // Silent until the server ends the tunnel (or the run ends).
                        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                        tally.close();
                        tally.add("tunnel_closed_by_server", 1);
                    }
                    Some(head) => {
                        let status = head.get(9..12).and_then(|s| std::str::from_utf8(s).ok()).unwrap_or("???");
                        tally.add(if status == "429" { "refused_429" } else { "refused_other" }, 1);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    None => tally.add("closed_by_server", 1),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Reads up to the end of a response head (at most 8 KiB), or `None` if the server closed.
async fn response_head(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await.ok()?.ok()?;
        if n == 0 || head.len() > 8192 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Some(head)
}
