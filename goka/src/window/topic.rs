//! A window's changelog as a typed table, [`WindowTable<P, W>`]: views, the tester and
//! queries read windows through it with keys `(key, window start)`.

use std::marker::PhantomData;

use super::key::{decode_window_key, encode_window_key};
use super::Window;
use crate::codec::{Codec, CodecError};
use crate::group::{Group, Windowed};
use crate::topic::{Table, Topic, TopicKind};

/// The windows `W` of group `P` as a table topic (`<group>-<window>-window`), keyed by the
/// message key and the window's start. `View<WindowTable<P, W>>` serves them.
pub struct WindowTable<P, W>(PhantomData<fn() -> (P, W)>);

impl<P, W> std::fmt::Debug for WindowTable<P, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WindowTable")
    }
}

/// The changelog topic of `W` in `P`'s graph ("" if `P` does not keep it, which
/// [`Windowed`] rules out).
const fn topic_of<P: Group, W: Window>() -> &'static str {
    let windows = P::GRAPH.windows;
    let mut i = 0;
    while i < windows.len() {
        if crate::graph::str_eq(windows[i].name, W::NAME) {
            return windows[i].edge.topic;
        }
        i += 1;
    }
    ""
}

impl<P: Windowed<W>, W: Window> Topic for WindowTable<P, W> {
    const NAME: &'static str = topic_of::<P, W>();
    const KIND: TopicKind = TopicKind::Table;
    type Key = (P::Key, i64);
    type Value = W::Value;
    type KeyCodec = WindowKeyCodec<P::KeyCodec>;
    type ValueCodec = WindowValueCodec<W::ValueCodec>;

    /// A window's row lives in its key's partition.
    fn partition_key(encoded: &[u8]) -> &[u8] {
        decode_window_key(encoded).map_or(encoded, |(key, _)| key)
    }
}

impl<P: Windowed<W>, W: Window> Table for WindowTable<P, W> {}

/// Encodes `(key, window start)` as a window row key, the key with `C`.
#[derive(Debug)]
pub struct WindowKeyCodec<C>(PhantomData<fn() -> C>);

impl<K, C: Codec<K>> Codec<(K, i64)> for WindowKeyCodec<C> {
    const NAME: &'static str = "window-key";

    fn encode(value: &(K, i64), buf: &mut Vec<u8>) -> Result<(), CodecError> {
        let key = C::encode_to_vec(&value.0)?;
        encode_window_key(&key, value.1, buf);
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<(K, i64), CodecError> {
        let (key, start) =
            decode_window_key(bytes).map_err(|e| CodecError::custom("window-key", e))?;
        Ok((C::decode(key)?, start))
    }
}

/// Decodes a window row's value with `C`, past its state byte.
#[derive(Debug)]
pub struct WindowValueCodec<C>(PhantomData<fn() -> C>);

impl<V, C: Codec<V>> Codec<V> for WindowValueCodec<C> {
    const NAME: &'static str = "window-value";

    /// Window rows are written by their processor only, which knows each window's end.
    fn encode(_: &V, _: &mut Vec<u8>) -> Result<(), CodecError> {
        Err(CodecError::custom(
            "window-value",
            "window rows are written by their processor, through ctx.window()",
        ))
    }

    fn decode(bytes: &[u8]) -> Result<V, CodecError> {
        match super::row::parse(bytes) {
            Some(row) => C::decode(row.value),
            None => Err(CodecError::custom(
                "window-value",
                "a window row without its state and end",
            )),
        }
    }
}
