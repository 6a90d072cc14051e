//! What a handler produces for one message, sent by the runtime after the handler returns.
//!
//! Keys and values are encoded into one buffer that the partition (or the tester) reuses for
//! every message it handles: a message that updates its row and emits once would otherwise
//! allocate a list and four byte vectors, all freed a moment later.

use crate::kafka::Headers;

/// What a produced message is for. Writes to the partition's own stores (`Table`, `Window`,
/// `Timer`) go to their changelogs and move the store's saved offset once acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutgoingKind {
    /// A write of the group table's row, to the table's changelog (`Context::set_value`).
    Table,
    /// A write of a window's row, to its changelog (`Context::window`).
    Window,
    /// A write of a timer, to the group's timer changelog (`Context::schedule`).
    Timer,
    Emit,
    Loop,
    /// Not a message: the completion of work a handler deferred (`Context::defer_commit`).
    Deferred,
}

impl OutgoingKind {
    /// Whether the message is a write to one of the partition's own stores.
    pub(crate) fn writes_a_store(self) -> bool {
        matches!(self, Self::Table | Self::Window | Self::Timer)
    }
}

/// The messages produced while handling one message, in order.
#[derive(Debug, Default)]
pub(crate) struct Outgoing {
    data: Vec<u8>,
    messages: Vec<Meta>,
    /// Where codecs write a key and a value before they are appended.
    scratch: (Vec<u8>, Vec<u8>),
    /// Completions of work the handler deferred: the input is done once they arrive.
    deferred: Vec<crate::kafka::Ack>,
}

#[derive(Debug)]
struct Meta {
    kind: OutgoingKind,
    topic: &'static str,
    partition: i32,
    start: usize,
    key_len: usize,
    /// `None` is a tombstone.
    value_len: Option<usize>,
    headers: Option<Headers>,
    follows: bool,
}

/// A produced message, borrowed from [`Outgoing`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutgoingMessage<'a> {
    pub(crate) kind: OutgoingKind,
    pub(crate) topic: &'static str,
    pub(crate) partition: i32,
    pub(crate) key: &'a [u8],
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) headers: Option<&'a Headers>,
    /// Produced only once every other message of the input was acknowledged (see
    /// [`Outgoing::push_scratch_following`]).
    pub(crate) follows: bool,
}

impl Outgoing {
    /// Forgets the messages, keeping the buffers.
    pub(crate) fn clear(&mut self) {
        self.data.clear();
        self.messages.clear();
        self.deferred.clear();
    }

    /// Forgets the messages but keeps the completions of deferred work: a message whose
    /// output is replaced (a dead letter) or dropped (skipped) is still not done before the
    /// work its handler deferred finished.
    pub(crate) fn discard_messages(&mut self) {
        self.data.clear();
        self.messages.clear();
    }

    /// Adds the completion of work the handler deferred.
    pub(crate) fn defer(&mut self, done: crate::kafka::Ack) {
        self.deferred.push(done);
    }

    /// Takes the completions of deferred work.
    pub(crate) fn take_deferred(&mut self) -> impl Iterator<Item = crate::kafka::Ack> + '_ {
        self.deferred.drain(..)
    }

    /// Empty key and value buffers to encode the next message into; then [`Self::push_scratch`].
    pub(crate) fn scratch(&mut self) -> (&mut Vec<u8>, &mut Vec<u8>) {
        self.scratch.0.clear();
        self.scratch.1.clear();
        (&mut self.scratch.0, &mut self.scratch.1)
    }

    /// The scratch buffers as they are, e.g. the key encoded so far.
    pub(crate) fn scratch_filled(&mut self) -> (&mut Vec<u8>, &mut Vec<u8>) {
        (&mut self.scratch.0, &mut self.scratch.1)
    }

    /// Appends the message encoded into the scratch buffers (a tombstone unless `has_value`).
    pub(crate) fn push_scratch(
        &mut self,
        kind: OutgoingKind,
        topic: &'static str,
        partition: i32,
        has_value: bool,
        headers: Option<Headers>,
    ) {
        self.push(kind, topic, partition, has_value, headers, false);
    }

    /// Appends the changelog write encoded into the scratch buffers that records what the
    /// messages before it stand for: a window's closed mark after its `on_close` output, a
    /// fired timer's tombstone after its handler's output. It is produced only once every
    /// other message of the input was acknowledged, so it never reaches its changelog
    /// without them: if one fails, a replay finds the window open or the timer stored, and
    /// closes or fires it again.
    pub(crate) fn push_scratch_following(
        &mut self,
        kind: OutgoingKind,
        topic: &'static str,
        partition: i32,
        has_value: bool,
    ) {
        self.push(kind, topic, partition, has_value, None, true);
    }

    fn push(
        &mut self,
        kind: OutgoingKind,
        topic: &'static str,
        partition: i32,
        has_value: bool,
        headers: Option<Headers>,
        follows: bool,
    ) {
        let start = self.data.len();
        self.data.extend_from_slice(&self.scratch.0);
        let value_len = has_value.then(|| {
            self.data.extend_from_slice(&self.scratch.1);
            self.scratch.1.len()
        });
        self.messages.push(Meta {
            kind,
            topic,
            partition,
            start,
            key_len: self.scratch.0.len(),
            value_len,
            headers,
            follows,
        });
    }

    /// Puts `defaults` under each message's own headers.
    pub(crate) fn add_default_headers(&mut self, defaults: &Headers) {
        for meta in &mut self.messages {
            meta.headers = Some(match &meta.headers {
                Some(own) => own.over(defaults),
                None => defaults.clone(),
            });
        }
    }

    /// The value of the last group table write (`Some(None)` for a delete), if there is one:
    /// a handler reads back what it wrote before the write reaches storage.
    pub(crate) fn last_row(&self) -> Option<Option<&[u8]>> {
        self.iter()
            .rev()
            .find(|m| m.kind == OutgoingKind::Table)
            .map(|m| m.value)
    }

    /// The value of the last `kind` write of `key` to `topic` (`Some(None)` for a delete).
    pub(crate) fn last_write(
        &self,
        kind: OutgoingKind,
        topic: &str,
        key: &[u8],
    ) -> Option<Option<&[u8]>> {
        self.iter()
            .rev()
            .find(|m| m.kind == kind && m.topic == topic && m.key == key)
            .map(|m| m.value)
    }

    /// The messages, in the order they were produced.
    pub(crate) fn iter(
        &self,
    ) -> impl ExactSizeIterator<Item = OutgoingMessage<'_>> + DoubleEndedIterator + '_ {
        self.messages.iter().map(|meta| {
            let value_start = meta.start + meta.key_len;
            OutgoingMessage {
                kind: meta.kind,
                topic: meta.topic,
                partition: meta.partition,
                key: &self.data[meta.start..value_start],
                value: meta
                    .value_len
                    .map(|len| &self.data[value_start..value_start + len]),
                headers: meta.headers.as_ref(),
                follows: meta.follows,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_back_in_order_and_clear_keeps_nothing() {
        let mut out = Outgoing::default();
        let mut headers = Headers::new();
        headers.insert("trace", b"t".to_vec());
        let (key, value) = out.scratch();
        key.extend_from_slice(b"alice");
        value.extend_from_slice(b"42");
        out.push_scratch(OutgoingKind::Table, "t-table", 3, true, None);
        let (key, value) = out.scratch();
        key.extend_from_slice(b"bob");
        value.extend_from_slice(b"ignored");
        out.push_scratch(
            OutgoingKind::Emit,
            "alerts",
            1,
            false,
            Some(headers.clone()),
        );
        let (key, _) = out.scratch();
        key.extend_from_slice(b"");
        out.push_scratch(OutgoingKind::Loop, "loop", 0, true, None);

        let got: Vec<_> = out.iter().collect();
        assert_eq!(got.len(), 3);
        assert_eq!(
            (
                got[0].kind,
                got[0].topic,
                got[0].partition,
                got[0].key,
                got[0].value
            ),
            (
                OutgoingKind::Table,
                "t-table",
                3,
                &b"alice"[..],
                Some(&b"42"[..])
            )
        );
        assert_eq!((got[1].key, got[1].value), (&b"bob"[..], None));
        assert_eq!(got[1].headers, Some(&headers));
        assert_eq!((got[2].key, got[2].value), (&b""[..], Some(&b""[..])));

        out.clear();
        assert_eq!(out.iter().count(), 0);
    }
}
