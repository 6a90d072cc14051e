//! The queue of one partition's inputs: order, failures, held writes.

use super::*;
use crate::kafka::{Delivery, SendError};
use futures::FutureExt;
use std::sync::Mutex;

/// A producer that remembers what it was given and acknowledges it at once, or fails
/// every delivery.
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<(String, Vec<u8>)>>,
    failing: bool,
}

impl Recorder {
    fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn sent(&self) -> Vec<(String, Vec<u8>)> {
        self.sent.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Producer for Recorder {
    fn try_send(&self, record: &OutgoingRecord<'_>) -> Result<Ack, SendError> {
        if let Ok(mut sent) = self.sent.lock() {
            sent.push((record.topic.to_owned(), record.key.to_vec()));
        }
        Ok(if self.failing {
            Ack::ready(Err(KafkaError::Unacknowledged))
        } else {
            delivered(100)
        })
    }

    fn flush(
        &self,
        _timeout: std::time::Duration,
    ) -> futures::future::BoxFuture<'_, Result<(), KafkaError>> {
        Box::pin(async { Ok(()) })
    }
}

/// The input at `offset` with `key`.
fn input(offset: i64, key: impl Into<Vec<u8>>) -> Input {
    Input {
        topic: "in".into(),
        offset,
        key: key.into(),
        stream_time: None,
    }
}

/// A timer tombstone held back.
fn tombstone(key: &[u8]) -> Held {
    Held {
        kind: OutgoingKind::Timer,
        topic: "g-timers",
        partition: 0,
        key: key.to_vec(),
        value: None,
        headers: None,
        timestamp: None,
    }
}

/// The group table row of `key`, written locally.
fn row(key: &[u8]) -> SmallVec<[LocalWrite; 1]> {
    SmallVec::from_elem(
        LocalWrite {
            kind: OutgoingKind::Table,
            topic: "g-table",
            key: key.to_vec(),
        },
        1,
    )
}

fn delivered(offset: i64) -> Ack {
    Ack::ready(Ok(Delivery {
        partition: 0,
        offset,
    }))
}

#[test]
fn inputs_are_done_in_order_once_all_their_acks_arrived() {
    let mut pending = Pending::new("g", 3, Recorder::new());
    let (late, late_ack) = Ack::channel();
    pending.push(
        input(7, b"a".to_vec()),
        [
            (OutgoingKind::Table, "g-table", delivered(40)),
            (OutgoingKind::Emit, "out", late_ack),
        ],
        Some("g-table"),
        SmallVec::new(),
        Vec::new(),
    );
    pending.push(
        input(8, b"b".to_vec()),
        [(OutgoingKind::Table, "g-table", delivered(41))],
        Some("g-table"),
        SmallVec::new(),
        Vec::new(),
    );
    assert!(
        pending.next_done().now_or_never().is_none(),
        "7 waits for its emit"
    );
    late.send(Ok(Delivery {
        partition: 1,
        offset: 99,
    }));
    let first = pending
        .next_done()
        .now_or_never()
        .expect("ready")
        .expect("ok");
    assert_eq!(
        (first.offset, first.changelogs.as_slice()),
        (7, &[("g-table", 40)][..])
    );
    let second = pending
        .next_done()
        .now_or_never()
        .expect("ready")
        .expect("ok");
    assert_eq!(
        (second.offset, second.changelogs.as_slice()),
        (8, &[("g-table", 41)][..])
    );
    assert!(pending.is_empty());
    assert!(
        pending.next_done().now_or_never().is_none(),
        "nothing waits"
    );
}

#[test]
fn a_failed_ack_names_its_input() {
    let mut pending = Pending::new("g", 3, Recorder::new());
    pending.push(input(5, Vec::new()), [], None, SmallVec::new(), Vec::new());
    pending.push(
        input(6, b"k".to_vec()),
        [(
            OutgoingKind::Emit,
            "out",
            Ack::ready(Err(KafkaError::Unacknowledged)),
        )],
        None,
        SmallVec::new(),
        Vec::new(),
    );
    let done = pending
        .next_done()
        .now_or_never()
        .expect("ready")
        .expect("ok");
    assert_eq!((done.offset, done.changelogs.as_slice()), (5, &[][..]));
    let failed = pending
        .next_done()
        .now_or_never()
        .expect("ready")
        .expect_err("failed");
    let text = failed.error.to_string();
    assert!(text.contains("offset 6"), "{text}");
    assert!(matches!(
        failed.error,
        ProcessorError::HandlerProduce {
            partition: 3,
            offset: 6,
            ..
        }
    ));
    assert!(failed.unconfirmed.is_empty(), "the input wrote no row");
}

#[test]
fn a_failed_input_leaves_the_queue_and_the_next_one_settles() {
    let mut pending = Pending::new("g", 0, Recorder::new());
    pending.push(
        input(1, b"hot".to_vec()),
        [
            (
                OutgoingKind::Table,
                "g-table",
                Ack::ready(Err(KafkaError::Unacknowledged)),
            ),
            (OutgoingKind::Emit, "out", delivered(3)),
        ],
        Some("g-table"),
        SmallVec::new(),
        Vec::new(),
    );
    pending.push(
        input(2, b"next".to_vec()),
        [(OutgoingKind::Table, "g-table", delivered(4))],
        Some("g-table"),
        SmallVec::new(),
        Vec::new(),
    );
    let failed = pending
        .next_done()
        .now_or_never()
        .expect("ready")
        .expect_err("failed");
    assert_eq!(failed.unconfirmed, row(b"hot").to_vec());
    assert_eq!(pending.len(), 1, "the failed input is gone");
    let next = pending
        .next_done()
        .now_or_never()
        .expect("ready")
        .expect("ok");
    assert_eq!(
        (next.offset, next.changelogs.as_slice()),
        (2, &[("g-table", 4)][..])
    );
    assert!(pending.is_empty());
}

#[test]
fn held_writes_are_produced_once_the_rest_arrived_and_the_input_waits_for_them() {
    let producer = Recorder::new();
    let mut pending = Pending::new("g", 0, producer.clone());
    let (output, output_ack) = Ack::channel();
    pending.push(
        input(4, b"k".to_vec()),
        [(OutgoingKind::Emit, "out", output_ack)],
        None,
        SmallVec::new(),
        vec![tombstone(b"t1")],
    );
    assert!(pending.holds("g-timers", b"t1"));
    assert!(!pending.holds("g-timers", b"t2"));
    assert!(pending.next_done().now_or_never().is_none());
    assert!(producer.sent().is_empty(), "held until the output arrived");
    output.send(Ok(Delivery {
        partition: 0,
        offset: 9,
    }));
    let done = pending
        .next_done()
        .now_or_never()
        .expect("ready")
        .expect("ok");
    assert_eq!(done.offset, 4);
    assert_eq!(producer.sent(), [("g-timers".to_owned(), b"t1".to_vec())]);
    assert!(!pending.holds("g-timers", b"t1"), "released");
}

#[test]
fn a_failed_output_leaves_the_held_write_unproduced_and_its_row_unconfirmed() {
    let producer = Recorder::new();
    let mut pending = Pending::new("g", 0, producer.clone());
    pending.push(
        input(4, b"k".to_vec()),
        [(
            OutgoingKind::Emit,
            "out",
            Ack::ready(Err(KafkaError::Unacknowledged)),
        )],
        None,
        SmallVec::from_elem(
            LocalWrite {
                kind: OutgoingKind::Timer,
                topic: "g-timers",
                key: b"t1".to_vec(),
            },
            1,
        ),
        vec![tombstone(b"t1")],
    );
    let failed = pending
        .next_done()
        .now_or_never()
        .expect("ready")
        .expect_err("failed");
    assert!(producer.sent().is_empty(), "never produced");
    assert_eq!(failed.unconfirmed.len(), 1);
    assert!(!pending.holds("g-timers", b"t1"));
}

#[test]
fn a_held_write_that_fails_fails_its_input() {
    let producer = Arc::new(Recorder {
        failing: true,
        ..Recorder::default()
    });
    let mut pending = Pending::new("g", 0, producer.clone());
    pending.push(
        input(4, b"k".to_vec()),
        [],
        None,
        SmallVec::new(),
        vec![tombstone(b"t1")],
    );
    let failed = pending
        .next_done()
        .now_or_never()
        .expect("ready")
        .expect_err("failed");
    assert!(matches!(
        failed.error,
        ProcessorError::HandlerProduce { offset: 4, .. }
    ));
    assert!(pending.has_failed());
    assert_eq!(producer.sent().len(), 1);
}

#[test]
fn abandoning_counts_unproduced_held_writes_as_unconfirmed() {
    let mut pending = Pending::new("g", 0, Recorder::new());
    let (_output, output_ack) = Ack::channel();
    pending.push(
        input(4, b"k".to_vec()),
        [(OutgoingKind::Emit, "out", output_ack)],
        None,
        SmallVec::from_elem(
            LocalWrite {
                kind: OutgoingKind::Window,
                topic: "g-w",
                key: b"w".to_vec(),
            },
            1,
        ),
        vec![tombstone(b"w")],
    );
    assert_eq!(pending.abandon().len(), 1);
    assert!(!pending.holds("g-timers", b"w"));
}
