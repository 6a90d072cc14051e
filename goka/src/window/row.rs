//! How a window's row value is laid out, in local storage and in its changelog: one byte of
//! state ([`OPEN`], or [`CLOSED`] once its `on_close` ran), the window's end (big-endian, a
//! session's end moves as it grows), then the value as its codec wrote it.

/// The state of a window that still takes messages.
pub(crate) const OPEN: u8 = 0;
/// The state of a window whose `on_close` ran.
pub(crate) const CLOSED: u8 = 1;

const HEADER: usize = 9;

/// A row value, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RowValue<'a> {
    pub(crate) state: u8,
    pub(crate) end: i64,
    /// The codec's bytes.
    pub(crate) value: &'a [u8],
}

/// Parses a row value; `None` for bytes too short to be one.
pub(crate) fn parse(bytes: &[u8]) -> Option<RowValue<'_>> {
    let (&state, rest) = bytes.split_first()?;
    let (end, value) = rest.split_first_chunk::<8>()?;
    Some(RowValue {
        state,
        end: i64::from_be_bytes(*end),
        value,
    })
}

/// Appends the header of a row value; the codec appends the value after it.
pub(crate) fn header(state: u8, end: i64, out: &mut Vec<u8>) {
    out.reserve(HEADER);
    out.push(state);
    out.extend_from_slice(&end.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_values_round_trip_and_short_bytes_are_none() {
        let mut out = Vec::new();
        header(CLOSED, -60_000, &mut out);
        out.extend_from_slice(b"42");
        assert_eq!(
            parse(&out),
            Some(RowValue {
                state: CLOSED,
                end: -60_000,
                value: b"42"
            })
        );
        assert_eq!(parse(&out[..5]), None);
        assert_eq!(parse(b""), None);
    }
}
