//! Free loopback ports for brokers and proxies, never the same one twice in a test binary.
//!
//! A port is chosen by binding port 0 and releasing it, so the process that is to listen on
//! it can bind it. Between the release and that bind, a second choice in the same binary
//! (a broker's controller port, a proxy in front of it, a parallel test) may be handed the
//! same port by the OS; Kafka then refuses two listeners on one port. Remembering every port
//! handed out rules that out; ports taken by other processes are retried by the callers.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, PoisonError};

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Records `port` as handed out; false if it already was.
fn claim(port: u16) -> bool {
    let mut handed = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    handed.get_or_insert_with(HashSet::new).insert(port)
}

/// A listener on a free loopback port that no earlier call in this binary handed out.
/// Listeners refused on the way are held until the end, so the OS offers another port.
pub fn bind_unclaimed() -> std::io::Result<TcpListener> {
    let mut refused = Vec::new();
    loop {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        if claim(listener.local_addr()?.port()) {
            return Ok(listener);
        }
        refused.push(listener);
    }
}

/// A port that was free a moment ago and that no other call in this binary got.
pub fn free_port() -> std::io::Result<u16> {
    Ok(bind_unclaimed()?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_hands_out_a_port_twice() {
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let port = free_port().expect("a free loopback port");
            assert!(seen.insert(port), "port {port} handed out twice");
        }
    }
}
