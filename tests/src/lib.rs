//! Test support for goka's integration tests, examples and benchmarks: a real
//! Kafka-compatible broker (Tansu) per test on a free port, and a TCP fault proxy that can
//! cut, stall or refuse connections between clients and that broker.
//!
//! A test that cannot start or reach the broker fails with a message saying why; nothing here
//! skips.

pub mod broker;
pub mod proxy;

pub use broker::{BrokerError, TestBroker};
pub use proxy::{FaultProxy, ProxyMode};
