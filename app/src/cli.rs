//! Command-line pieces the programs share: the address to use for a HOST and PORT,
//! `--byteorder` and `--tls-version` values, time limits in seconds, and one way to fail.
//!
//! Every sockmsg program exits with [`EXIT_OK`] (0) on success, [`EXIT_FAILURE`] (1) when
//! something fails at run time (cannot resolve, bind, connect; a protocol error; a server
//! that answered wrongly) and [`EXIT_USAGE`] (2) for bad arguments (clap's own exit code).
//! Errors are printed on one line as `PROGRAM: what failed: why`, naming the path or
//! address concerned ([`fail`]).
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

use std::fmt::Display;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use sockmsg_protocol::ByteOrder;
use sockmsg_tls::TlsVersion;

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

/// `--tls-version` values, `1.2` and `1.3` (a clap value parser: `--help` lists both, and
/// so does the error for any other value).
pub fn tls_version() -> impl TypedValueParser<Value = TlsVersion> {
    PossibleValuesParser::new(["1.2", "1.3"]).try_map(|s| s.parse::<TlsVersion>())
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

/// Exit code of a program that did what it was asked.
pub const EXIT_OK: u8 = 0;
/// Exit code of a program that failed at run time.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a program given bad arguments (as clap exits).
pub const EXIT_USAGE: u8 = 2;

/// The one error line of every program: prints `PROGRAM: what failed: why` to stderr and
/// returns [`EXIT_FAILURE`]. `what` names the operation and its path or address
/// (`cannot connect to 127.0.0.1:65432`), `why` the cause (`connection refused`).
///
/// ```
/// let code = sockmsg_app::cli::fail("app-client", "cannot connect to 127.0.0.1:9", "refused");
/// assert_eq!(code, std::process::ExitCode::from(sockmsg_app::cli::EXIT_FAILURE));
/// ```
pub fn fail(program: &str, what: impl Display, why: impl Display) -> ExitCode {
    eprintln!("{program}: {what}: {why}");
    ExitCode::from(EXIT_FAILURE)
}

/// A usage error found after clap parsed the arguments (two options that do not go
/// together...): prints `PROGRAM: message` to stderr and returns [`EXIT_USAGE`].
pub fn usage_error(program: &str, message: impl Display) -> ExitCode {
    eprintln!("{program}: {message}");
    ExitCode::from(EXIT_USAGE)
}
