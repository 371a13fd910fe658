//! A budget for the HTTP/2 control frames a client sends (issue 14's SETTINGS and PING
//! floods). h2 answers every SETTINGS and PING frame and accepts any number of PRIORITY and
//! RST_STREAM frames, and neither it nor hyper bounds how often: eight connections sending
//! them as fast as they can took the CPU from everyone else. Reading the client's bytes as
//! they arrive, this wrapper counts those frames on each connection against a token bucket
//! and ends the connection (a read error, so hyper closes it) when a client keeps sending
//! them faster than any browser does.
//!
//! It only reads frame headers (9 bytes) and skips payloads, never copies or changes a byte,
//! and steps aside on the first bytes that are not the HTTP/2 preface (HTTP/1.1).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The connection preface every HTTP/2 client starts with (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;

/// Control frames a connection may send at once: a browser sends a few SETTINGS, a PING now
/// and then, some PRIORITY frames at start-up and an RST_STREAM per abandoned request.
pub const CONTROL_BURST: f64 = 200.0;
/// Control frames per second once the burst is spent.
pub const CONTROL_PER_SECOND: f64 = 50.0;

/// Where the reader is in the client's byte stream.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Matching the preface; `usize` bytes of it seen so far.
    Preface(usize),
    /// Reading a frame header; `have` of its 9 bytes seen.
    Header { buf: [u8; FRAME_HEADER], have: usize },
    /// Skipping a frame's payload.
    Payload(usize),
    /// Not HTTP/2 (or done judging): bytes pass uncounted.
    Off,
}

/// An IO wrapper that counts the client's HTTP/2 control frames.
pub struct FrameGuard<I> {
    inner: I,
    state: State,
    tokens: f64,
    refilled: Instant,
    /// Called once when the budget runs out (a metric).
    on_flood: Option<Box<dyn FnOnce() + Send>>,
}

impl<I> FrameGuard<I> {
    pub fn new(inner: I, on_flood: impl FnOnce() + Send + 'static) -> Self {
        Self {
            inner,
            state: State::Preface(0),
            tokens: CONTROL_BURST,
            refilled: Instant::now(),
            on_flood: Some(Box::new(on_flood)),
        }
    }

    /// Takes one control frame from the budget; `false` when none is left.
    fn spend(&mut self) -> bool {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * CONTROL_PER_SECOND;
        self.tokens = (self.tokens + earned).min(CONTROL_BURST);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Follows the frames in `bytes`; `Err` when the client is over its budget.
    fn inspect(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match self.state {
                State::Off => return Ok(()),
                State::Preface(seen) => {
                    let n = (PREFACE.len() - seen).min(bytes.len());
                    if bytes[..n] != PREFACE[seen..seen + n] {
                        self.state = State::Off;
                        return Ok(());
                    }
                    bytes = &bytes[n..];
                    self.state = if seen + n == PREFACE.len() {
                        State::Header { buf: [0; FRAME_HEADER], have: 0 }
                    } else {
                        State::Preface(seen + n)
                    };
                }
                State::Header { mut buf, have } => {
                    let n = (FRAME_HEADER - have).min(bytes.len());
                    buf[have..have + n].copy_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if have + n < FRAME_HEADER {
                        self.state = State::Header { buf, have: have + n };
                        continue;
                    }
                    let length = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
                    let (kind, flags) = (buf[3], buf[4]);
                    let control =
                        matches!(kind, PRIORITY | RST_STREAM) || (matches!(kind, SETTINGS | PING) && flags & ACK == 0);
                    if control && !self.spend() {
                        if let Some(report) = self.on_flood.take() {
                            report();
                        }
                        return Err(io::Error::other("too many HTTP/2 control frames"));
                    }
                    self.state = if length == 0 {
                        State::Header { buf: [0; FRAME_HEADER], have: 0 }
                    } else {
                        State::Payload(length)
                    };
                }
                State::Payload(left) => {
                    let n = left.min(bytes.len());
                    bytes = &bytes[n..];
                    self.state = if n == left {
                        State::Header { buf: [0; FRAME_HEADER], have: 0 }
                    } else {
                        State::Payload(left - n)
                    };
                }
            }
        }
        Ok(())
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FrameGuard<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if !matches!(self.state, State::Off) {
                self.inspect(&buf.filled()[before..])?;
            }
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FrameGuard<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn frame(kind: u8, flags: u8, payload: usize) -> Vec<u8> {
        let mut f = vec![(payload >> 16) as u8, (payload >> 8) as u8, payload as u8, kind, flags, 0, 0, 0, 0];
        f.extend(std::iter::repeat_n(0u8, payload));
        f
    }

    fn guard() -> (FrameGuard<()>, Arc<AtomicBool>) {
        let flooded = Arc::new(AtomicBool::new(false));
        let seen = flooded.clone();
        (FrameGuard::new((), move || seen.store(true, Ordering::Relaxed)), flooded)
    }

    #[test]
    fn a_settings_flood_runs_out_of_budget_and_a_browser_does_not() {
        let (mut g, flooded) = guard();
        g.inspect(PREFACE).expect("the preface");
        // A browser: SETTINGS, WINDOW_UPDATE, HEADERS, DATA, acks, a few PINGs and resets.
        let mut browser = frame(SETTINGS, 0, 18);
        for _ in 0..50 {
            browser.extend(frame(0x8, 0, 4));
            browser.extend(frame(0x1, 0x4, 300));
            browser.extend(frame(0x0, 0, 16_384));
            browser.extend(frame(SETTINGS, ACK, 0));
            browser.extend(frame(PING, ACK, 8));
        }
        browser.extend(frame(PING, 0, 8));
        browser.extend(frame(RST_STREAM, 0, 4));
        g.inspect(&browser).expect("a browser is within the budget");
        // A flood, one byte at a time as a slow network would split it.
        let flood: Vec<u8> = (0..300).flat_map(|_| frame(SETTINGS, 0, 6)).collect();
        let refused = flood.iter().any(|b| g.inspect(std::slice::from_ref(b)).is_err());
        assert!(refused, "300 SETTINGS frames at once are over the budget");
        assert!(flooded.load(Ordering::Relaxed), "the flood is reported");
    }

    #[test]
    fn http1_passes_uncounted() {
        let (mut g, _) = guard();
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
        g.inspect(&request).expect("HTTP/1.1 is not judged");
        assert!(matches!(g.state, State::Off));
    }
}
