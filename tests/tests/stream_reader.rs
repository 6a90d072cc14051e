//! Reading a topic back with `StreamReader`: every message once, decoded, in offset order
//! per partition; from the newest message on; a message that does not decode named and
//! passed; a missing topic named. On the in-memory tester and on the test broker. And
//! `GroupReader`: members of one group share the partitions, and a member that joins after
//! another closed goes on after the last message done.

// Test helpers unwrap: a failure is a loud test failure.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use goka::codec::{Int64Codec, StringCodec};
use goka::emitter::Emitter;
use goka::processor::GroupStart;
use goka::reader::{GroupReader, ReadFrom, ReaderError, StreamReader};
use goka::tester::Tester;
use goka::topic::Topic;
use goka_tests::{client, TestBroker};

goka::stream!(pub Scores = "reader-scores": i64 as Int64Codec);
goka::stream!(pub Missing = "reader-missing": String as StringCodec);

const PARTITIONS: u32 = 4;

/// Emits `count` scores over 10 keys; returns what each key got, in order.
async fn emit_scores(
    emitter: &Emitter<Scores>,
    from: i64,
    count: i64,
) -> HashMap<String, Vec<i64>> {
    let mut sent: HashMap<String, Vec<i64>> = HashMap::new();
    for score in from..from + count {
        let key = format!("player-{}", score % 10);
        emitter.emit_sync(&key, &score).await.unwrap();
        sent.entry(key).or_default().push(score);
    }
    sent
}

/// What a reader read, per key in order; checks offsets rise within each partition.
fn by_key(read: &[goka::reader::Message<Scores>]) -> HashMap<String, Vec<i64>> {
    let mut last: HashMap<i32, i64> = HashMap::new();
    let mut got: HashMap<String, Vec<i64>> = HashMap::new();
    for message in read {
        let previous = last.insert(message.partition, message.offset);
        assert!(
            previous.is_none_or(|p| p < message.offset),
            "offsets out of order"
        );
        got.entry(message.key.clone())
            .or_default()
            .push(message.value.unwrap());
    }
    got
}

/// The error of a reader of a topic that does not exist names it.
fn assert_names_the_missing_topic(error: Option<ReaderError>) {
    let error = error.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        error.contains("reader-missing") && error.contains("does not exist"),
        "{error}"
    );
}

#[tokio::test]
async fn the_tester_reads_back_what_was_emitted() {
    let tester = Tester::with_partitions(PARTITIONS);
    let emitter = tester.emitter::<Scores>().await.unwrap();
    let at = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    emitter
        .emit_at(&"early".to_owned(), &-1, at)
        .await
        .unwrap()
        .await
        .unwrap();
    let sent = emit_scores(&emitter, 0, 50).await;
    let mut reader = StreamReader::<Scores>::open(&*tester.client(), ReadFrom::Oldest)
        .await
        .unwrap();
    let read = reader.read_to_end().await.unwrap();
    assert_eq!(read.len(), 51);
    let early = read.iter().find(|m| m.key == "early").unwrap();
    assert_eq!(
        early.timestamp,
        Some(1_600_000_000_000),
        "the emit's own time"
    );
    let mut got = by_key(&read);
    got.remove("early");
    assert_eq!(got, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_reads_every_message_once_names_one_that_does_not_decode_and_follows_new_ones() {
    let broker = TestBroker::start();
    let client = client(&broker);
    let missing = StreamReader::<Missing>::open(&*client, ReadFrom::Oldest).await;
    assert_names_the_missing_topic(missing.err());

    goka_tests::ensure_streams(&broker, &[Scores::NAME], PARTITIONS).await;
    let emitter = Emitter::<Scores>::new(&*client).await.unwrap();
    let sent = emit_scores(&emitter, 0, 200).await;
    let mut reader = StreamReader::<Scores>::open(&*client, ReadFrom::Oldest)
        .await
        .unwrap();
    let read = reader.read_to_end().await.unwrap();
    assert_eq!(read.len(), 200);
    assert_eq!(by_key(&read), sent, "every message once, in order per key");

    // A reader from the newest sees only what comes after it opened; a text where an int64
    // belongs is named and passed.
    let mut newest = StreamReader::<Scores>::open(&*client, ReadFrom::Newest)
        .await
        .unwrap();
    goka_tests::produce_raw(
        &broker,
        Scores::NAME,
        2,
        &[("intruder", Some("not a number"))],
    )
    .await;
    let later = emit_scores(&emitter, 1_000, 20).await;
    let mut got = Vec::new();
    let mut undecodable = Vec::new();
    while got.len() < 20 {
        let next = tokio::time::timeout(Duration::from_secs(30), newest.next())
            .await
            .expect("the newest reader stalled")
            .expect("the reader closed");
        match next {
            Ok(message) => got.push(message),
            Err(error @ ReaderError::Decode { .. }) => undecodable.push(error.to_string()),
            Err(error) => panic!("{error}"),
        }
    }
    assert_eq!(by_key(&got), later);
    assert_eq!(undecodable.len(), 1, "{undecodable:?}");
    let named = &undecodable[0];
    for part in [
        "reader-scores",
        "partition 2",
        "\"intruder\"",
        "value does not decode",
    ] {
        assert!(named.contains(part), "{part:?} missing from {named}");
    }

    // The first reader goes on from where it was: the intruder is named, and the next call
    // hands out every score, those read before the intruder too.
    let error = reader
        .read_to_end()
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("\"intruder\""), "{error}");
    let since = reader.read_to_end().await.unwrap();
    assert_eq!(
        by_key(&since),
        later,
        "nothing lost around the undecodable message"
    );
    assert!(
        reader.read_to_end().await.unwrap().is_empty(),
        "at the end: nothing new"
    );
}

/// Reads `count` messages from `reader`, each within 30 s.
async fn read_from_group(reader: &mut GroupReader<Scores>, count: usize) -> Vec<(i32, i64, i64)> {
    let mut read = Vec::new();
    while read.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(30), reader.next())
            .await
            .expect("the group reader stalled")
            .expect("the group reader closed")
            .unwrap();
        read.push((message.partition, message.offset, message.value.unwrap()));
    }
    read
}

/// Whether `reader` hands out anything more within `wait`.
async fn reads_more(reader: &mut GroupReader<Scores>, wait: Duration) -> bool {
    tokio::time::timeout(wait, reader.next()).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_readers_share_partitions_and_go_on_after_the_last_message_done() {
    let broker = TestBroker::start();
    let client: Arc<dyn goka::kafka::Client> = client(&broker);
    let missing = GroupReader::<Missing>::join(client.clone(), "readers", GroupStart::Oldest).await;
    assert_names_the_missing_topic(missing.err());

    goka_tests::ensure_streams(&broker, &[Scores::NAME], PARTITIONS).await;
    let emitter = Emitter::<Scores>::new(&*client).await.unwrap();
    emit_scores(&emitter, 0, 100).await;

    // A first member reads 40 and closes: those 40 are committed, the 40th included.
    let mut first = GroupReader::<Scores>::join(client.clone(), "readers", GroupStart::Oldest)
        .await
        .unwrap();
    let mut read = read_from_group(&mut first, 40).await;
    first.close().await.unwrap();
    // The next member of the group reads exactly the other 60.
    let mut second = GroupReader::<Scores>::join(client.clone(), "readers", GroupStart::Oldest)
        .await
        .unwrap();
    read.extend(read_from_group(&mut second, 60).await);
    assert!(
        !reads_more(&mut second, Duration::from_secs(3)).await,
        "read twice"
    );
    let mut scores: Vec<i64> = read.iter().map(|(_, _, score)| *score).collect();
    scores.sort_unstable();
    assert_eq!(scores, (0..100).collect::<Vec<_>>(), "each score once");

    // Two members at once split the partitions and read what comes next between them.
    let mut third = GroupReader::<Scores>::join(client.clone(), "readers", GroupStart::Oldest)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while second.assignment().is_empty() || third.assignment().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the group did not split its partitions"
        );
        // The second member takes part in the rebalance while it waits for messages.
        let _ = reads_more(&mut second, Duration::from_millis(200)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mine, theirs) = (second.assignment(), third.assignment());
    assert_eq!(
        mine.len() + theirs.len(),
        PARTITIONS as usize,
        "{mine:?} {theirs:?}"
    );
    assert!(
        mine.iter().all(|p| !theirs.contains(p)),
        "{mine:?} {theirs:?}"
    );
    emit_scores(&emitter, 1_000, 100).await;
    let mut both = Vec::new();
    while both.len() < 100 {
        tokio::select! {
            Some(Ok(m)) = second.next() => both.push((m.partition, m.value.unwrap(), "second")),
            Some(Ok(m)) = third.next() => both.push((m.partition, m.value.unwrap(), "third")),
            () = tokio::time::sleep(Duration::from_secs(30)) => panic!("stalled at {}", both.len()),
        }
    }
    for (partition, _, member) in &both {
        let owner = if mine.contains(partition) {
            "second"
        } else {
            "third"
        };
        assert_eq!(
            *member, owner,
            "partition {partition} read by the member that does not own it"
        );
    }
    let mut scores: Vec<i64> = both.iter().map(|(_, score, _)| *score).collect();
    scores.sort_unstable();
    assert_eq!(
        scores,
        (1_000..1_100).collect::<Vec<_>>(),
        "each new score once"
    );
    second.close().await.unwrap();
    third.close().await.unwrap();
}
