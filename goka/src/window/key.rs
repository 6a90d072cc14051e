//! How a window's rows are keyed, in local storage and in its changelog: the message key,
//! length-prefixed so that one key's windows are one contiguous, unambiguous range, then
//! the window's start, ordered as a number (big-endian, sign bit flipped).

/// A window row key that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a window row key ({len} bytes): {why}")]
pub struct WindowKeyError {
    len: usize,
    why: &'static str,
}

const LEN: usize = 4;
const START: usize = 8;

/// Appends the row key of the window of `key` starting at `start` to `out`.
pub fn encode_window_key(key: &[u8], start: i64, out: &mut Vec<u8>) {
    out.reserve(LEN + key.len() + START);
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&((start as u64) ^ (1 << 63)).to_be_bytes());
}

/// The prefix every row key of `key`'s windows starts with.
pub(crate) fn window_key_prefix(key: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
}

/// The message key and window start of a row key.
pub fn decode_window_key(row: &[u8]) -> Result<(&[u8], i64), WindowKeyError> {
    let error = |why| WindowKeyError {
        len: row.len(),
        why,
    };
    let (len, rest) = row
        .split_first_chunk::<LEN>()
        .ok_or_else(|| error("shorter than its length prefix"))?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() != len + START {
        return Err(error("its length prefix does not fit"));
    }
    let (key, start) = rest.split_at(len);
    let start = <[u8; START]>::try_from(start).map_err(|_| error("no window start"))?;
    Ok((key, (u64::from_be_bytes(start) ^ (1 << 63)) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &[u8], start: i64) -> Vec<u8> {
        let mut out = Vec::new();
        encode_window_key(key, start, &mut out);
        out
    }

    #[test]
    fn row_keys_round_trip() {
        for (key, start) in [
            (&b"user-1"[..], 60_000),
            (b"", 0),
            (b"k", -1),
            (b"k", i64::MIN),
            (b"k", i64::MAX),
        ] {
            assert_eq!(decode_window_key(&row(key, start)), Ok((key, start)));
        }
    }

    #[test]
    fn one_keys_windows_sort_by_start_and_share_a_prefix_no_other_key_has() {
        let mut rows = [
            row(b"ab", 120_000),
            row(b"ab", -60_000),
            row(b"abc", 0),
            row(b"ab", 0),
        ];
        rows.sort();
        let decoded: Vec<_> = rows
            .iter()
            .map(|r| decode_window_key(r).map(|(k, s)| (k.to_vec(), s)))
            .collect::<Result<_, _>>()
            .expect("rows parse");
        assert_eq!(
            decoded,
            [
                (b"ab".to_vec(), -60_000),
                (b"ab".to_vec(), 0),
                (b"ab".to_vec(), 120_000),
                (b"abc".to_vec(), 0)
            ]
        );
        let mut prefix = Vec::new();
        window_key_prefix(b"ab", &mut prefix);
        assert!(!row(b"abc", 0).starts_with(&prefix));
        assert!(row(b"ab", 7).starts_with(&prefix));
    }

    #[test]
    fn malformed_row_keys_are_errors() {
        assert!(decode_window_key(b"").is_err());
        assert!(decode_window_key(&[0, 0, 0, 9, 1, 2]).is_err());
        let mut long = row(b"k", 1);
        long.push(0);
        assert!(decode_window_key(&long).is_err());
    }
}
