//! Address ranges, for the SSRF guard: API servers in a denied range are refused when a
//! kubeconfig names one by address, and every time a host name resolves to one.

use std::net::IpAddr;

/// An address range, `10.0.0.0/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

/// Why a text is not an address range. Each message quotes the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// The address part is not an IP address.
    #[error("\"{0}\" is not an address range such as 10.0.0.0/8")]
    Address(String),
    /// The prefix length is not a number up to the address's bits.
    #[error("\"{text}\": the prefix length must be 0 to {max}")]
    Prefix {
        /// The text given.
        text: String,
        /// The largest prefix length: 32 for IPv4, 128 for IPv6.
        max: u8,
    },
}

impl std::str::FromStr for Network {
    type Err = NetworkError;

    fn from_str(text: &str) -> Result<Network, NetworkError> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| NetworkError::Address(text.to_string()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| NetworkError::Prefix {
                    text: text.to_string(),
                    max,
                })?,
            None => max,
        };
        Ok(Network { addr, prefix })
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Network {
    /// Whether `ip` is in the range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (canonical(self.addr), canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The first range of `denied` that holds `ip`.
pub fn denied_by(denied: &[Network], ip: IpAddr) -> Option<Network> {
    denied.iter().copied().find(|n| n.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let n: Network = "169.254.0.0/16".parse().unwrap();
        assert!(n.contains("169.254.169.254".parse().unwrap()));
        assert!(n.contains("::ffff:169.254.1.1".parse().unwrap()));
        assert!(!n.contains("169.255.0.1".parse().unwrap()));
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let one: Network = "10.1.2.3".parse().unwrap();
        assert!(
            one.contains("10.1.2.3".parse().unwrap()) && !one.contains("10.1.2.4".parse().unwrap())
        );
        let v6: Network = "fd00::/8".parse().unwrap();
        assert!(
            v6.contains("fd12::1".parse().unwrap()) && !v6.contains("fe80::1".parse().unwrap())
        );
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("ten/8".parse::<Network>().is_err());
    }
}
