//! PROXY protocol v2 (the binary form, as HAProxy and cloud load balancers send it): the
//! client's address, sent by the load balancer in front before the first byte of HTTP or TLS.
//! Read only on listeners that enable it; believed only from a trusted peer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::io::{AsyncRead, AsyncReadExt};

const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest address block accepted (addresses plus TLVs); real headers are far shorter.
const MAX_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("the connection closed or failed before a PROXY header: {0}")]
    Io(#[from] std::io::Error),
    #[error("the connection did not start with a PROXY protocol v2 signature")]
    Signature,
    #[error("PROXY protocol version or command {0:#04x} is not v2 LOCAL or PROXY")]
    Command(u8),
    #[error("PROXY header of {0} bytes is too long")]
    TooLong(usize),
    #[error("PROXY header address block is shorter than its family needs")]
    Short,
}

/// Reads one v2 header. `Ok(Some(source))` for a proxied TCP connection; `Ok(None)` for a
/// LOCAL connection (the proxy's own health check) or an address family without an IP.
pub async fn read_v2<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Option<SocketAddr>, HeaderError> {
    let mut head = [0u8; 16];
    stream.read_exact(&mut head).await?;
    if head[..12] != SIGNATURE {
        return Err(HeaderError::Signature);
    }
    let command = head[12];
    if command >> 4 != 2 || command & 0x0f > 1 {
        return Err(HeaderError::Command(command));
    }
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if len > MAX_LEN {
        return Err(HeaderError::TooLong(len));
    }
    let mut block = vec![0u8; len];
    stream.read_exact(&mut block).await?;
    if command & 0x0f == 0 {
        return Ok(None);
    }
    let source = match head[13] >> 4 {
        1 => {
            let b = block.get(..12).ok_or(HeaderError::Short)?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([b[8], b[9]]))
        }
        2 => {
            let b = block.get(..36).ok_or(HeaderError::Short)?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[..16]);
            SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), u16::from_be_bytes([b[32], b[33]]))
        }
        _ => return Ok(None),
    };
    Ok(Some(source))
}

/// Builds a v2 PROXY header for a TCP connection from `source` to `destination` (for tests
/// and tools that stand in for a load balancer).
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.push(0x21);
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.extend_from_slice(&[0x11, 0, 12]);
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        (s, d) => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.extend_from_slice(&[0x21, 0, 36]);
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_what_it_encodes_and_leaves_the_rest() {
        let src: SocketAddr = "203.0.113.7:55000".parse().expect("addr");
        let dst: SocketAddr = "10.0.0.1:8080".parse().expect("addr");
        let mut bytes = encode_v2(src, dst);
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let mut reader = &bytes[..];
        assert_eq!(read_v2(&mut reader).await.expect("header"), Some(src));
        assert_eq!(reader, b"GET / HTTP/1.1\r\n");
        let v6: SocketAddr = "[2001:db8::7]:443".parse().expect("addr");
        let bytes = encode_v2(v6, "[::1]:8443".parse().expect("addr"));
        assert_eq!(read_v2(&mut &bytes[..]).await.expect("header"), Some(v6));
    }

    #[tokio::test]
    async fn rejects_plain_http_bad_commands_and_short_blocks() {
        assert!(matches!(read_v2(&mut &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]).await, Err(HeaderError::Signature)));
        let mut bad = encode_v2("1.2.3.4:1".parse().expect("a"), "5.6.7.8:2".parse().expect("a"));
        bad[12] = 0x13;
        assert!(matches!(read_v2(&mut &bad[..]).await, Err(HeaderError::Command(0x13))));
        let mut short = encode_v2("1.2.3.4:1".parse().expect("a"), "5.6.7.8:2".parse().expect("a"));
        short[15] = 4;
        short.truncate(20);
        assert!(matches!(read_v2(&mut &short[..]).await, Err(HeaderError::Short)));
        assert!(matches!(read_v2(&mut &SIGNATURE[..]).await, Err(HeaderError::Io(_))));
    }
}
