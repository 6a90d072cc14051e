//! The `goka-broker` program: a broker in the background until stopped by its folder, and
//! clear refusals of what it cannot do. The stand-in broker keeps it quick; the Kafka paths
//! are the same code, tested with the library in the workspace's `local_broker` tests.

// Test helpers unwrap: a failure is a loud test failure.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output};

fn goka_broker(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_goka-broker"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn start_prints_the_address_and_stop_ends_it_by_its_folder() {
    let started = goka_broker(&["start", "--kind", "tansu"]);
    let (out, err) = (text(&started.stdout), text(&started.stderr));
    assert!(started.status.success(), "{err}");
    let addr: SocketAddr = out.trim().parse().unwrap();
    assert!(TcpStream::connect(addr).is_ok(), "nothing serves on {addr}");
    let dir = err
        .split("stop with: goka-broker stop ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no folder in: {err}"))
        .to_owned();

    let stopped = goka_broker(&["stop", &dir]);
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    assert!(text(&stopped.stderr).contains("stopped 1 node(s)"));
    assert!(!std::path::Path::new(&dir).exists(), "{dir} left behind");
    let mut closed = false;
    for _ in 0..50 {
        if TcpStream::connect(addr).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(closed, "{addr} still serves");
}

#[test]
fn what_it_cannot_do_is_refused_with_the_reason() {
    for (args, reason) in [
        (&["--nodes", "2"][..], "1 or 3"),
        (&["--kind", "tansu", "--nodes", "3"][..], "one only"),
        (&["--kind", "zookeeper"][..], "expected kafka or tansu"),
        (&["--nodes"][..], "--nodes needs a value"),
        (&["stop"][..], "stop takes the folder"),
        (&["--color"][..], "unknown argument \"--color\""),
    ] {
        let output = goka_broker(args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let err = text(&output.stderr);
        assert!(err.contains(reason), "{args:?}: {err}");
        assert!(output.stdout.is_empty(), "{args:?} printed an address");
    }
}
