//! Loopback source addresses, one per visitor (127.x.y.z), so usher tells visitors apart by
//! their real socket address, as it would on the internet, without spoofed headers.

use std::net::Ipv4Addr;

/// Why a range of source addresses cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    #[error("source addresses must be in 127.0.0.0/8 (loopback), not {0}")]
    NotLoopback(Ipv4Addr),
    #[error("{count} visitors do not fit between {first} and 127.255.255.254")]
    TooMany { first: Ipv4Addr, count: u64 },
}

/// The `index`-th address from `first`, skipping the `.0` and `.255` host bytes.
#[derive(Debug, Clone, Copy)]
pub struct Sources {
    /// The first address's /24, as its top 24 bits.
    net: u32,
    /// The first address's host byte, less one (0..254).
    host: u32,
}

/// Usable addresses per /24 (host bytes 1..=254).
const PER_24: u64 = 254;

impl Sources {
    /// Addresses from `first` on, checked to hold `count` visitors inside 127.0.0.0/8.
    pub fn new(first: Ipv4Addr, count: u64) -> Result<Self, SourceError> {
        if first.octets()[0] != 127 {
            return Err(SourceError::NotLoopback(first));
        }
        let sources = Self { net: u32::from(first) >> 8, host: u32::from(first.octets()[3]).clamp(1, 254) - 1 };
        match count.checked_sub(1).map(|last| sources.try_get(last)) {
            Some(None) => Err(SourceError::TooMany { first, count }),
            _ => Ok(sources),
        }
    }

    fn try_get(&self, index: u64) -> Option<Ipv4Addr> {
        let offset = u64::from(self.host).checked_add(index)?;
        let net = u64::from(self.net) + offset / PER_24;
        let host = offset % PER_24 + 1;
        (net >> 16 == 127).then(|| Ipv4Addr::from(u32::try_from(net << 8 | host).unwrap_or(0)))
    }

    /// The source address of visitor `index` (127.0.0.1 past the end of loopback, which
    /// [`Sources::new`] rules out for the count it checked).
    pub fn get(&self, index: u64) -> Ipv4Addr {
        self.try_get(index).unwrap_or(Ipv4Addr::LOCALHOST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_loopback_and_skip_network_and_broadcast_bytes() {
        let s = Sources::new(Ipv4Addr::new(127, 1, 0, 1), 1000).expect("fits");
        assert_eq!(s.get(0), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(s.get(253), Ipv4Addr::new(127, 1, 0, 254));
        assert_eq!(s.get(254), Ipv4Addr::new(127, 1, 1, 1));
        let all: std::collections::HashSet<_> = (0..1000).map(|i| s.get(i)).collect();
        assert_eq!(all.len(), 1000);
        assert!(all.iter().all(|a| a.octets()[0] == 127 && a.octets()[3] != 0 && a.octets()[3] != 255));
    }

    #[test]
    fn ranges_outside_loopback_or_too_long_are_refused() {
        assert_eq!(
            Sources::new(Ipv4Addr::new(10, 0, 0, 1), 1).err(),
            Some(SourceError::NotLoopback(Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert!(Sources::new(Ipv4Addr::new(127, 255, 255, 1), 1000).is_err());
        assert!(Sources::new(Ipv4Addr::new(127, 1, 0, 1), 1_000_000).is_ok());
    }
}
