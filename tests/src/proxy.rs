//! A TCP fault proxy for disconnect tests, in the spirit of goka's systemtest proxy.
//!
//! It sits between clients and a broker (the broker advertises the proxy's address, so
//! clients never bypass it) and, on command, cuts every open connection, stalls them
//! (accepts and keeps connections open but forwards nothing), or refuses new connections
//! (closes its listening socket). It runs on a thread of its own with its own runtime, so it
//! keeps working whatever the test's runtime is doing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward bytes both ways.
    Forward,
    /// Accept connections and keep them open, but forward nothing.
    Stall,
    /// Close the listening socket: new connections are refused. Open ones keep forwarding.
    Refuse,
}

#[derive(Debug, Clone, Copy)]
struct State {
    mode: ProxyMode,
    /// Bumped by every cut; connections opened under an older generation close.
    generation: u64,
    shutdown: bool,
}

/// A running fault proxy. Dropping it stops it and closes every connection.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    control: watch::Sender<State>,
    accepted: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on a free port of 127.0.0.1 forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let std_listener = crate::ports::bind_unclaimed()?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (control, state) = watch::channel(State {
            mode: ProxyMode::Forward,
            generation: 0,
            shutdown: false,
        });
        let accepted = Arc::new(AtomicUsize::new(0));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let counter = accepted.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(std_listener) {
                        Ok(listener) => accept_loop(listener, addr, upstream, state, counter).await,
                        Err(e) => eprintln!("fault proxy {addr}: cannot register listener: {e}"),
                    }
                });
            })?;
        Ok(Self {
            addr,
            upstream,
            control,
            accepted,
            thread: Some(thread),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address traffic is forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Closes every open connection now. New connections are handled by the current mode.
    pub fn cut(&self) {
        self.control.send_modify(|s| s.generation += 1);
    }

    /// Switches what the proxy does with traffic.
    pub fn set_mode(&self, mode: ProxyMode) {
        self.control.send_modify(|s| s.mode = mode);
    }

    /// The current mode.
    pub fn mode(&self) -> ProxyMode {
        self.control.borrow().mode
    }

    /// Number of connections accepted since the start.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.control.send_modify(|s| s.shutdown = true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    mut state: watch::Receiver<State>,
    accepted: Arc<AtomicUsize>,
) {
    let mut listener = Some(listener);
    loop {
        let current = *state.borrow_and_update();
        if current.shutdown {
            return;
        }
        match (current.mode, listener.is_some()) {
            (ProxyMode::Refuse, true) => listener = None,
            (ProxyMode::Refuse, false) => {}
            (_, false) => listener = rebind(addr, &mut state).await,
            (_, true) => {}
        }
        let Some(open) = &listener else {
            if state.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::select! {
            conn = open.accept() => {
                if let Ok((client, _)) = conn {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(serve(client, upstream, state.clone()));
                }
            }
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Binds the proxy's address again after refusing; retries while the port is in TIME_WAIT.
async fn rebind(addr: SocketAddr, state: &mut watch::Receiver<State>) -> Option<TcpListener> {
    loop {
        if state.borrow().shutdown {
            return None;
        }
        match TcpListener::bind(addr).await {
            Ok(listener) => return Some(listener),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn serve(client: TcpStream, upstream: SocketAddr, state: watch::Receiver<State>) {
    let generation = state.borrow().generation;
    let mut cut_state = state.clone();
    let cut = async {
        let _ = cut_state
            .wait_for(|s| s.shutdown || s.generation != generation)
            .await;
    };
    let forward = async {
        wait_unstalled(state.clone()).await;
        let Ok(server) = TcpStream::connect(upstream).await else {
            return;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        tokio::select! {
            _ = pump(client_read, server_write, state.clone()) => {}
            _ = pump(server_read, client_write, state.clone()) => {}
        }
    };
    // Whichever ends first ends the connection: dropping the streams closes both sides.
    tokio::select! {
        _ = cut => {}
        _ = forward => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: watch::Receiver<State>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        wait_unstalled(state.clone()).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        wait_unstalled(state.clone()).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn wait_unstalled(mut state: watch::Receiver<State>) {
    let _ = state.wait_for(|s| s.mode != ProxyMode::Stall).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream as StdStream;

    /// An echo server on a thread: writes back what it reads, one connection at a time.
    fn echo_server() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn connect(addr: SocketAddr) -> StdStream {
        let stream = StdStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        stream
    }

    fn echo(stream: &mut StdStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(msg)?;
        let mut buf = vec![0u8; msg.len()];
        stream.read_exact(&mut buf)?;
        Ok(buf)
    }

    #[test]
    fn forwards_cuts_stalls_and_refuses() {
        let proxy = FaultProxy::start(echo_server()).unwrap();
        let mut a = connect(proxy.addr());
        assert_eq!(echo(&mut a, b"hello").unwrap(), b"hello");

        proxy.cut();
        let mut buf = [0u8; 1];
        let read = a.read(&mut buf);
        assert!(
            matches!(read, Ok(0)) || read.is_err(),
            "a cut connection is closed: {read:?}"
        );
        let mut b = connect(proxy.addr());
        assert_eq!(echo(&mut b, b"after cut").unwrap(), b"after cut");

        proxy.set_mode(ProxyMode::Stall);
        let err = echo(&mut b, b"stalled").unwrap_err();
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "nothing comes back while stalled: {err}"
        );
        proxy.set_mode(ProxyMode::Forward);
        let mut rest = vec![0u8; 7];
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        b.read_exact(&mut rest).unwrap();
        assert_eq!(rest, b"stalled", "stalled bytes are delivered, not dropped");

        proxy.set_mode(ProxyMode::Refuse);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while StdStream::connect(proxy.addr()).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "connections still accepted"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            echo(&mut b, b"open one").unwrap(),
            b"open one",
            "open connections keep working"
        );
        proxy.set_mode(ProxyMode::Forward);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut c = loop {
            match StdStream::connect(proxy.addr()) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "not accepting again: {e}"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(echo(&mut c, b"back").unwrap(), b"back");
        assert!(proxy.accepted() >= 3);
    }
}
