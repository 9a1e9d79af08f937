//! Command-line pieces the programs share: the address to use for a HOST and PORT,
//! `--byteorder` values and time limits in seconds.
//!
//! ```
//! use sockmsg_app::cli::{positive_secs, secs_or_zero, Order};
//! use sockmsg_protocol::ByteOrder;
//! assert_eq!(positive_secs("1.5"), Ok(1.5));
//! assert!(positive_secs("0").is_err());
//! assert_eq!(secs_or_zero("0"), Ok(0.0));
//! assert!(secs_or_zero("-1").is_err());
//! assert_eq!(ByteOrder::from(Order::Big), ByteOrder::Big);
//! assert_eq!(sockmsg_app::cli::resolve("127.0.0.1", 80), Ok("127.0.0.1:80".parse().unwrap()));
//! ```

use std::net::{SocketAddr, ToSocketAddrs};

use sockmsg_protocol::ByteOrder;

/// The first address `host` (an IP address or a name) and `port` resolve to, or a message
/// saying why there is none.
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host:?} has no address"))
}

/// `--byteorder` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Order {
    /// Little-endian: `"byteorder": "little"`.
    Little,
    /// Big-endian: `"byteorder": "big"`.
    Big,
}

impl From<Order> for ByteOrder {
    fn from(order: Order) -> ByteOrder {
        match order {
            Order::Little => ByteOrder::Little,
            Order::Big => ByteOrder::Big,
        }
    }
}

/// Longest time limit accepted, in seconds (about 31 years): beyond it a `Duration` built
/// from the value stops meaning anything to a user.
const MAX_SECS: f64 = 1e9;

/// Seconds, fractions allowed, more than zero (a clap value parser).
pub fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs < MAX_SECS => Ok(secs),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

/// Seconds, fractions allowed, zero included (where 0 means "no limit"; a clap value
/// parser).
pub fn secs_or_zero(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..MAX_SECS).contains(&secs) => Ok(secs),
        _ => Err(format!("{s:?} is not a number of seconds")),
    }
}
