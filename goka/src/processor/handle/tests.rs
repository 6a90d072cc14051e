//! Handling one message without a broker: what comes out, nil handling, failures, panics,
//! undecodable keys, default headers and the event time read from a value.

#![allow(clippy::unwrap_used)]

use super::super::fixture::{click, resources, written, Alerts, Counter};
use super::super::policies::Policies;
use super::super::{HandlerErrorPolicy, NilHandling, ProcessorConfig, ProcessorError};
use super::{handle, Handled};
use crate::codec::DecodeErrorPolicy;
use crate::context::{Outgoing, OutgoingKind};
use crate::kafka::Headers;

const TABLE: &str = "unit-counter-table";

async fn counter(
    config: &ProcessorConfig,
    message: &crate::kafka::ConsumedMessage,
) -> (Result<Handled, ProcessorError>, Outgoing) {
    let resources = resources::<Counter>();
    let mut outgoing = Outgoing::default();
    let handled = handle(
        &Counter,
        &resources,
        message,
        Policies::of::<Counter>(config),
        &mut outgoing,
    )
    .await
    .map(|(handled, _)| handled);
    (handled, outgoing)
}

#[tokio::test]
async fn what_a_handler_writes_comes_out_in_order_and_nothing_reaches_a_store_yet() {
    let resources = resources::<Counter>();
    let config = ProcessorConfig::default();
    let mut outgoing = Outgoing::default();
    for offset in 0..2 {
        let (handled, fired) = handle(
            &Counter,
            &resources,
            &click(offset, "ann", Some("home"), 1_000),
            Policies::of::<Counter>(&config),
            &mut outgoing,
        )
        .await
        .unwrap();
        assert!(matches!(handled, Handled::Produced), "{handled:?}");
        assert_eq!(fired, Default::default());
        let out = written(&outgoing);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(
            (out[0].0, out[0].1, out[0].2.as_str()),
            (OutgoingKind::Table, TABLE, "ann")
        );
        // The row is written by the collector once its changelog write is queued: the
        // second message still counts from nothing.
        assert_eq!(
            out[1],
            (
                OutgoingKind::Emit,
                <Alerts as crate::topic::Topic>::NAME,
                "ann".into(),
                Some("1 clicks".into()),
                false
            )
        );
    }
    assert_eq!(resources.table.as_ref().unwrap().get(b"ann").unwrap(), None);
}

#[tokio::test]
async fn a_tombstone_is_ignored_or_deletes_the_row_as_the_nil_handling_says() {
    let tombstone = click(4, "ann", None, 1_000);
    let ignore = ProcessorConfig {
        nil_handling: Some(NilHandling::Ignore),
        ..Default::default()
    };
    let (handled, outgoing) = counter(&ignore, &tombstone).await;
    assert!(matches!(handled, Ok(Handled::Ignored)), "{handled:?}");
    assert!(written(&outgoing).is_empty());

    let restore = ProcessorConfig {
        nil_handling: Some(NilHandling::Restore),
        ..Default::default()
    };
    let (handled, outgoing) = counter(&restore, &tombstone).await;
    assert!(matches!(handled, Ok(Handled::Produced)), "{handled:?}");
    assert_eq!(
        written(&outgoing),
        [(OutgoingKind::Table, TABLE, "ann".into(), None, false)],
        "the row's tombstone, nothing else"
    );
}

#[tokio::test]
async fn a_failing_handler_stops_naming_its_message_or_becomes_a_dead_letter() {
    let failing = click(7, "ann", Some("fail"), 1_000);
    let (handled, _) = counter(&ProcessorConfig::default(), &failing).await;
    let error = handled.unwrap_err().to_string();
    for part in [
        "unit-counter",
        "unit-clicks",
        "partition 0",
        "offset 7",
        "\"ann\"",
        "refusing the page",
    ] {
        assert!(error.contains(part), "{part:?} missing from {error}");
    }

    let dead_letters = ProcessorConfig {
        handler_errors: HandlerErrorPolicy::DeadLetter,
        default_headers: [("team", "web")].into_iter().collect(),
        ..Default::default()
    };
    let (handled, outgoing) = counter(&dead_letters, &failing).await;
    assert!(matches!(handled, Ok(Handled::DeadLettered)), "{handled:?}");
    let out = written(&outgoing);
    assert_eq!(
        out,
        [(
            OutgoingKind::Emit,
            "unit-counter-dead-letters",
            "ann".into(),
            Some("fail".into()),
            false
        )],
        "the message as it came replaces the row and the emit the handler wrote"
    );
    let headers = outgoing
        .iter()
        .next()
        .unwrap()
        .headers
        .cloned()
        .unwrap_or_default();
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(
        header(super::super::DEAD_LETTER_OFFSET).as_deref(),
        Some("7")
    );
    assert_eq!(
        header(super::super::DEAD_LETTER_REASON).as_deref(),
        Some("handler")
    );
    assert_eq!(
        header("team"),
        None,
        "a dead letter carries its own headers only"
    );
}

#[tokio::test]
async fn a_panicking_handler_stops_naming_its_message() {
    let (handled, _) = counter(
        &ProcessorConfig::default(),
        &click(3, "bob", Some("panic"), 0),
    )
    .await;
    let error = handled.unwrap_err().to_string();
    assert!(error.contains("offset 3"), "{error}");
    assert!(
        error.contains("handler panicked: the page \"panic\""),
        "{error}"
    );
}

#[tokio::test]
async fn an_undecodable_key_stops_or_is_skipped_as_the_policy_says() {
    let mut message = click(9, "x", Some("home"), 0);
    message.key = vec![0xff, 0xfe];
    let (handled, _) = counter(&ProcessorConfig::default(), &message).await;
    let error = handled.unwrap_err().to_string();
    assert!(
        error.contains("offset 9") && error.contains("key does not decode"),
        "{error}"
    );

    let skip = ProcessorConfig {
        decode_errors: Some(DecodeErrorPolicy::SkipAndCount),
        ..Default::default()
    };
    let (handled, outgoing) = counter(&skip, &message).await;
    assert!(matches!(handled, Ok(Handled::Undecodable)), "{handled:?}");
    assert!(written(&outgoing).is_empty());
}

#[tokio::test]
async fn default_headers_go_under_every_write() {
    let config = ProcessorConfig {
        default_headers: [("team", "web")].into_iter().collect::<Headers>(),
        ..Default::default()
    };
    let (handled, outgoing) = counter(&config, &click(0, "ann", Some("home"), 0)).await;
    assert!(matches!(handled, Ok(Handled::Produced)));
    for out in outgoing.iter() {
        let team = out.headers.and_then(|h| h.get("team"));
        assert_eq!(team, Some(&b"web"[..]), "{:?} of {}", out.kind, out.topic);
    }
}

/// Reads a click's event time from its page, "at <ms>"; "panic" panics.
#[goka::processor(group = "unit-stamped")]
#[input(topic = super::super::fixture::Clicks, handler = Self::on_click, event_time = Self::clicked_at)]
#[derive(Debug, Default)]
struct Stamped;

impl Stamped {
    fn clicked_at(&self, page: &String) -> Option<i64> {
        if page == "panic" {
            panic!("no time in a panic");
        }
        page.strip_prefix("at ").and_then(|at| at.parse().ok())
    }

    fn on_click(
        &self,
        _ctx: &mut crate::context::Context<'_, Self>,
        _page: String,
    ) -> Result<(), crate::context::CallbackError> {
        Ok(())
    }
}

#[test]
fn the_event_time_read_from_the_value_replaces_the_records_or_stops_naming_the_message() {
    let stamped = |page: &str| {
        let mut message = click(4, "ann", Some(page), 1_000);
        super::apply_event_time(&Stamped, &mut message).map(|()| message.timestamp)
    };
    assert_eq!(stamped("at 42").unwrap(), Some(42));
    assert_eq!(
        stamped("home").unwrap(),
        Some(1_000),
        "None keeps the record's"
    );
    let mut counted = click(4, "ann", Some("at 42"), 1_000);
    super::apply_event_time(&Counter, &mut counted).unwrap();
    assert_eq!(counted.timestamp, Some(1_000), "a group without event_time");
    for (page, says) in [
        ("at -5", "before 1970"),
        ("panic", "event_time panicked: no time in a panic"),
    ] {
        let error = stamped(page).unwrap_err().to_string();
        assert!(
            error.contains("offset 4") && error.contains(says),
            "{error}"
        );
    }
}
