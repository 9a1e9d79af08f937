//! Addresses a client connects to, named in its errors: one trait for every transport's
//! clients.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, ToSocketAddrs};

/// Something a client can connect to: anything [`ToSocketAddrs`] accepts (a `SocketAddr`,
/// `"host:port"`, `("host", port)`, an IP address and a port), with a name for errors.
pub trait ServerAddr: ToSocketAddrs {
    /// How errors name it (`localhost:8080`, `[::1]:8080`).
    fn name(&self) -> String;
}

macro_rules! server_addr_display {
    ($($t:ty),*) => {$(
        impl ServerAddr for $t {
            fn name(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
server_addr_display!(SocketAddr, SocketAddrV4, SocketAddrV6, str, String);

macro_rules! server_addr_ip {
    ($($t:ty),*) => {$(
        impl ServerAddr for ($t, u16) {
            fn name(&self) -> String {
                SocketAddr::from((self.0, self.1)).to_string()
            }
        }
    )*};
}
server_addr_ip!(IpAddr, Ipv4Addr, Ipv6Addr);

/// `host:port`, with brackets around an IPv6 literal.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl ServerAddr for (&str, u16) {
    fn name(&self) -> String {
        host_port(self.0, self.1)
    }
}

impl ServerAddr for (String, u16) {
    fn name(&self) -> String {
        host_port(&self.0, self.1)
    }
}

impl ServerAddr for &[SocketAddr] {
    fn name(&self) -> String {
        let names: Vec<String> = self.iter().map(SocketAddr::to_string).collect();
        names.join(", ")
    }
}

impl<T: ServerAddr + ?Sized> ServerAddr for &T {
    fn name(&self) -> String {
        (**self).name()
    }
}

/// Every address `addr` resolves to; an error (its kind kept) when it resolves to none.
///
/// ```
/// use sockmsg_server::addr::resolve;
/// let addrs = resolve(&("127.0.0.1", 80))?;
/// assert_eq!(addrs, ["127.0.0.1:80".parse().unwrap()]);
/// assert!(resolve(&("no-such-host.invalid", 80)).is_err());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn resolve(addr: &(impl ServerAddr + ?Sized)) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the resolver returned no address",
        ));
    }
    Ok(addrs)
}
