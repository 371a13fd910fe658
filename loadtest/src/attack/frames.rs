//! HTTP/2 frames written by hand (RFC 9113 §4, HPACK RFC 7541 static table only), so the
//! attack kinds can send what no well-behaved client library would: a stream reset the
//! moment it opens, a header block that never ends, a flood of SETTINGS or PING.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The client connection preface, before any frame.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The largest frame payload a peer must accept without a SETTINGS of its own.
pub const MAX_FRAME: usize = 16_384;

pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// `CANCEL`: what a browser sends when the user navigates away (the rapid-reset pattern).
pub const CANCEL: u32 = 0x8;

/// Appends one frame to `out`.
pub fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX).min(0x00ff_ffff);
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(&payload[..len as usize]);
}

/// An HPACK integer with an `prefix`-bit prefix, the high bits of its first byte `first`.
fn integer(out: &mut Vec<u8>, first: u8, prefix: u32, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// An HPACK string literal, not Huffman-coded.
fn string(out: &mut Vec<u8>, text: &[u8]) {
    integer(out, 0x00, 7, text.len());
    out.extend_from_slice(text);
}

/// The header block of `GET path` on `authority` over plain HTTP: static-table indices and
/// literals that are never indexed, so it can be sent on any stream without a dynamic table.
pub fn request_block(authority: &str, path: &str) -> Vec<u8> {
    let mut out = vec![0x82, 0x86]; // :method GET, :scheme http
    if path == "/" {
        out.push(0x84);
    } else {
        integer(&mut out, 0x00, 4, 4); // :path, literal without indexing
        string(&mut out, path.as_bytes());
    }
    integer(&mut out, 0x00, 4, 1); // :authority, literal without indexing
    string(&mut out, authority.as_bytes());
    out
}

/// A literal header `name: value` with a new name; `indexed` adds it to the peer's
/// dynamic table (the pressure an oversized block puts on the decoder's memory).
pub fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8], indexed: bool) {
    out.push(if indexed { 0x40 } else { 0x00 });
    string(out, name);
    string(out, value);
}

/// The preface and an empty SETTINGS: all a client must send before its first stream.
pub fn handshake() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    frame(&mut out, SETTINGS, 0, 0, &[]);
    out
}

/// A header block split into HEADERS and CONTINUATION frames of at most [`MAX_FRAME`].
pub fn header_frames(out: &mut Vec<u8>, stream: u32, block: &[u8], end_stream: bool) {
    let mut chunks = block.chunks(MAX_FRAME).peekable();
    let mut first = true;
    if block.is_empty() {
        frame(out, HEADERS, END_HEADERS | if end_stream { END_STREAM } else { 0 }, stream, &[]);
        return;
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let mut flags = if last { END_HEADERS } else { 0 };
        let kind = if first { HEADERS } else { CONTINUATION };
        if first && end_stream {
            flags |= END_STREAM;
        }
        frame(out, kind, flags, stream, chunk);
        first = false;
    }
}

/// One frame read from the server: its type, flags and payload.
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub payload: Vec<u8>,
}

/// Reads the next frame, or `None` when the server has closed (or sent garbage).
pub async fn read<R: AsyncRead + Unpin>(reader: &mut R) -> Option<Frame> {
    let mut head = [0u8; 9];
    reader.read_exact(&mut head).await.ok()?;
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    // A server sends no frame larger than our default SETTINGS_MAX_FRAME_SIZE.
    if len > MAX_FRAME {
        return None;
    }
    let mut payload = vec![0; len];
    reader.read_exact(&mut payload).await.ok()?;
    Some(Frame { kind: head[3], flags: head[4], payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_a_nine_byte_head_and_header_blocks_split_at_the_frame_limit() {
        let mut out = Vec::new();
        frame(&mut out, RST_STREAM, 0, 3, &CANCEL.to_be_bytes());
        assert_eq!(out, [0, 0, 4, 3, 0, 0, 0, 0, 3, 0, 0, 0, 8]);
        let mut out = Vec::new();
        header_frames(&mut out, 1, &vec![0u8; MAX_FRAME + 10], true);
        assert_eq!(out.len(), 9 + MAX_FRAME + 9 + 10);
        assert_eq!((out[3], out[4]), (HEADERS, END_STREAM));
        let second = 9 + MAX_FRAME;
        assert_eq!((out[second + 3], out[second + 4]), (CONTINUATION, END_HEADERS));
    }

    #[test]
    fn hpack_integers_and_the_request_block_use_the_static_table() {
        let mut out = Vec::new();
        integer(&mut out, 0, 7, 300);
        assert_eq!(out, [127, 173, 1]);
        let block = request_block("a:1", "/x");
        assert_eq!(block, [0x82, 0x86, 0x04, 2, b'/', b'x', 0x01, 3, b'a', b':', b'1']);
    }
}
