//! `host:port` network addresses as the configuration file writes them.
//!
//! Invariants: a [`HostPort`] always has a non-empty host made of hostname
//! characters, or a valid IPv6 address (written `[::1]:6001` in text and kept
//! without brackets inside), and a port that fits a `u16`. Display and parsing
//! round-trip, so an address read from the file prints the same way in errors
//! and logs. Names are not resolved here: a config is checked offline, and
//! the process that binds or dials resolves when it needs to.

use std::fmt;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use serde::de::{Deserialize, Deserializer};

/// A `host:port` address: a hostname, an IPv4 address or a bracketed IPv6 address, and a port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    /// Without brackets, also for IPv6: brackets are part of the text form only.
    host: String,
    port: u16,
}

impl HostPort {
    /// The host: a name, an IPv4 address, or an IPv6 address without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The same host with another port (the default metrics address is derived this way).
    pub fn with_port(&self, port: u16) -> HostPort {
        HostPort { host: self.host.clone(), port }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only an IPv6 host contains ':'; it needs brackets to keep the port apart.
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for HostPort {
    /// The reason, ready to follow a key path: `"6001" is not host:port (no ':port')`.
    type Err = String;

    fn from_str(text: &str) -> Result<HostPort, String> {
        let refuse = |why: &str| format!("{text:?} is not host:port ({why})");
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let Some((host, after)) = rest.split_once(']') else {
                return Err(refuse("an IPv6 address opened with '[' needs a closing ']'"));
            };
            if host.parse::<Ipv6Addr>().is_err() {
                return Err(refuse("the part in brackets is not an IPv6 address"));
            }
            let Some(port) = after.strip_prefix(':') else {
                return Err(refuse("no ':port' after the bracketed address"));
            };
            (host, port)
        } else {
            let Some((host, port)) = text.rsplit_once(':') else {
                return Err(refuse("no ':port'"));
            };
            if host.contains(':') {
                return Err(refuse("write an IPv6 address in brackets, as in [::1]:6001"));
            }
            if host.is_empty() {
                return Err(refuse("the host is empty"));
            }
            if !host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')) {
                return Err(refuse("the host may hold only letters, digits, '-', '.' and '_'"));
            }
            (host, port)
        };
        // u16::from_str alone would also take "+80"; a port is digits only.
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refuse("the port is not a number"));
        }
        let port: u16 = port.parse().map_err(|_| refuse("the port is more than 65535"))?;
        Ok(HostPort { host: host.to_string(), port })
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<HostPort, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Resolves the host (a name may give several addresses), so that a `HostPort`
/// can be passed straight to `bind` or `connect`.
impl ToSocketAddrs for HostPort {
    type Iter = std::vec::IntoIter<SocketAddr>;

    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        (self.host.as_str(), self.port).to_socket_addrs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HostPort, String> {
        text.parse()
    }

    #[test]
    fn ipv4_names_and_ipv6_parse_and_print_back() {
        for text in ["127.0.0.1:6001", "cache-1.example.org:50051", "localhost:0", "[::1]:6001", "[fe80::1]:65535"] {
            let address = parse(text).unwrap();
            assert_eq!(address.to_string(), text);
        }
        let v6 = parse("[::1]:6001").unwrap();
        assert_eq!((v6.host(), v6.port()), ("::1", 6001));
        assert_eq!(parse("127.0.0.1:6001").unwrap().with_port(7001).to_string(), "127.0.0.1:7001");
    }

    #[test]
    fn malformed_addresses_are_refused_with_the_reason() {
        let cases = [
            ("6001", "no ':port'"),
            ("127.0.0.1", "no ':port'"),
            (":6001", "the host is empty"),
            ("::1:6001", "write an IPv6 address in brackets, as in [::1]:6001"),
            ("[::1:6001", "an IPv6 address opened with '[' needs a closing ']'"),
            ("[nothost]:6001", "the part in brackets is not an IPv6 address"),
            ("[::1]6001", "no ':port' after the bracketed address"),
            ("127.0.0.1:", "the port is not a number"),
            ("127.0.0.1:+80", "the port is not a number"),
            ("127.0.0.1:-1", "the port is not a number"),
            ("127.0.0.1:65536", "the port is more than 65535"),
            ("my host:80", "the host may hold only letters, digits, '-', '.' and '_'"),
        ];
        for (text, why) in cases {
            assert_eq!(parse(text), Err(format!("{text:?} is not host:port ({why})")), "{text}");
        }
    }

    #[test]
    fn resolves_to_socket_addresses() {
        let addrs: Vec<SocketAddr> = parse("[::1]:6001").unwrap().to_socket_addrs().unwrap().collect();
        assert_eq!(addrs, vec!["[::1]:6001".parse::<SocketAddr>().unwrap()]);
    }
}
