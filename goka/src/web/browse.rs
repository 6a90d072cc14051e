//! The table browser: a page of a table's rows in key order, across the partitions the
//! component holds, filtered by a prefix or a range, each value decoded as JSON.
//!
//! Each partition's storage is sorted by key, so a page takes the first `limit + 1` rows of
//! every partition after the cursor, merges them and keeps `limit`: the cost of a page is
//! bounded by partitions times page size, whatever the table's size.

use std::collections::HashMap;

use serde::Serialize;

use super::registry::Queryable;
use super::QueryError;
use crate::storage::KeyRange;

/// Rows per page unless `limit` says otherwise.
pub const DEFAULT_PAGE: usize = 20;
/// The most rows one page may ask for.
pub const MAX_PAGE: usize = 500;

/// What a page asks for (the query string of the browser and of `/api/rows`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Browse {
    /// Keys starting with this text.
    pub prefix: String,
    /// Keys at or after this text.
    pub from: String,
    /// Keys before this text.
    pub to: String,
    /// The last key of the previous page, hex-encoded (keys may be any bytes).
    pub after: Option<Vec<u8>>,
    /// Rows on the page.
    pub limit: usize,
}

impl Browse {
    /// Reads the browser's parameters; a malformed cursor or limit is a 400 with the reason.
    pub fn from_params(params: &HashMap<String, String>) -> Result<Self, String> {
        let text = |name: &str| params.get(name).cloned().unwrap_or_default();
        let after = match params.get("after").filter(|a| !a.is_empty()) {
            Some(hex) => Some(from_hex(hex).ok_or_else(|| {
                format!(
                    "`after` must be the hex of a key (as the next-page link gives), not {hex:?}"
                )
            })?),
            None => None,
        };
        let limit = match params.get("limit").filter(|l| !l.is_empty()) {
            Some(limit) => match limit.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                _ => return Err(format!("`limit` must be 1 to {MAX_PAGE}, not {limit:?}")),
            },
            None => DEFAULT_PAGE,
        };
        Ok(Self {
            prefix: text("prefix"),
            from: text("from"),
            to: text("to"),
            after,
            limit,
        })
    }

    /// The key range the filter and the cursor leave.
    fn range(&self) -> KeyRange {
        let mut range = if self.prefix.is_empty() {
            KeyRange::all()
        } else {
            KeyRange::prefix(self.prefix.as_bytes())
        };
        if !self.from.is_empty() {
            range.start = range.start.max(Some(self.from.as_bytes().to_vec()));
        }
        if !self.to.is_empty() {
            let to = self.to.as_bytes().to_vec();
            range.end = Some(range.end.map_or(to.clone(), |end| end.min(to)));
        }
        if let Some(after) = &self.after {
            // The smallest key after `after`.
            let mut next = after.clone();
            next.push(0);
            range.start = range.start.max(Some(next));
        }
        range
    }
}

/// One row of a page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The key as text (lossy where it is not UTF-8), as the point query takes it.
    pub key: String,
    /// The value, decoded and rendered as JSON.
    pub value: serde_json::Value,
}

/// A page of rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowsPage {
    /// The table.
    pub table: &'static str,
    /// The rows, in key order.
    pub rows: Vec<Row>,
    /// The cursor of the next page (hex of the last key), when there are more rows.
    pub next: Option<String>,
    /// Partitions whose rows the page covers (those the component holds).
    pub partitions: usize,
}

/// The page `browse` asks for of `table`.
pub(super) fn page(table: &dyn Queryable, browse: &Browse) -> Result<RowsPage, QueryError> {
    let name = table.table();
    let range = browse.range();
    let storages = table.storages();
    let read_error = |message: String| QueryError::Read {
        table: name,
        key: String::new(),
        message,
    };
    let mut raw: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    if range.end.is_none() || range.start < range.end {
        for storage in &storages {
            let rows = storage
                .range(range.clone())
                .map_err(|e| read_error(e.to_string()))?;
            for row in rows.take(browse.limit + 1) {
                raw.push(row.map_err(|e| read_error(e.to_string()))?);
            }
        }
    }
    raw.sort_by(|a, b| a.0.cmp(&b.0));
    let more = raw.len() > browse.limit;
    raw.truncate(browse.limit);
    let next = more
        .then(|| raw.last().map(|(key, _)| to_hex(key)))
        .flatten();
    let rows = raw
        .iter()
        .map(|(key, value)| {
            Ok(Row {
                key: String::from_utf8_lossy(key).into_owned(),
                value: table.value_json(key, value)?,
            })
        })
        .collect::<Result<Vec<_>, QueryError>>()?;
    Ok(RowsPage {
        table: name,
        rows,
        next,
        partitions: storages.len(),
    })
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::{MemoryStorage, Storage};

    struct Rows(Vec<Arc<dyn Storage>>);

    impl Queryable for Rows {
        fn table(&self) -> &'static str {
            "t"
        }
        fn query(&self, _: &str) -> Result<Option<serde_json::Value>, QueryError> {
            Ok(None)
        }
        fn storages(&self) -> Vec<Arc<dyn Storage>> {
            self.0.clone()
        }
        fn value_json(&self, _: &[u8], raw: &[u8]) -> Result<serde_json::Value, QueryError> {
            Ok(serde_json::Value::String(
                String::from_utf8_lossy(raw).into(),
            ))
        }
    }

    /// Keys `k00`..`k29` spread over three partitions, as a partitioner would.
    fn table() -> Rows {
        let partitions: Vec<Arc<dyn Storage>> = (0..3)
            .map(|_| Arc::new(MemoryStorage::default()) as Arc<dyn Storage>)
            .collect();
        for i in 0..30 {
            let key = format!("k{i:02}");
            partitions[(i * 7) % 3]
                .set(key.as_bytes(), format!("v{i}").as_bytes())
                .unwrap_or_else(|e| panic!("{e}"));
        }
        Rows(partitions)
    }

    fn keys(page: &RowsPage) -> Vec<&str> {
        page.rows.iter().map(|r| r.key.as_str()).collect()
    }

    fn browse(params: &[(&str, &str)]) -> Browse {
        let params = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Browse::from_params(&params).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn pages_follow_key_order_across_partitions_to_the_end() {
        let table = table();
        let mut seen = Vec::new();
        let mut after = String::new();
        let mut pages = 0;
        loop {
            let page = page(&table, &browse(&[("limit", "7"), ("after", &after)]))
                .unwrap_or_else(|e| panic!("{e}"));
            pages += 1;
            seen.extend(keys(&page).iter().map(|k| k.to_string()));
            match page.next {
                Some(next) => after = next,
                None => break,
            }
        }
        let expected: Vec<String> = (0..30).map(|i| format!("k{i:02}")).collect();
        assert_eq!(seen, expected, "every key once, in order");
        assert_eq!(pages, 5, "7 + 7 + 7 + 7 + 2");
    }

    #[test]
    fn a_prefix_or_a_range_filters_the_rows() {
        let table = table();
        let prefixed = page(&table, &browse(&[("prefix", "k1")])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keys(&prefixed).len(), 10);
        assert!(keys(&prefixed).iter().all(|k| k.starts_with("k1")));
        assert_eq!(prefixed.rows[0].value, serde_json::json!("v10"));
        let ranged = page(&table, &browse(&[("from", "k05"), ("to", "k08")]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keys(&ranged), ["k05", "k06", "k07"]);
        assert_eq!(ranged.next, None);
        let empty = page(&table, &browse(&[("from", "k20"), ("to", "k10")]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(empty.rows.is_empty());
    }

    #[test]
    fn a_malformed_cursor_or_limit_is_refused_with_the_reason() {
        let params = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        let bad = Browse::from_params(&params("after", "xyz")).unwrap_err();
        assert!(bad.contains("hex"), "{bad}");
        let bad = Browse::from_params(&params("limit", "0")).unwrap_err();
        assert!(bad.contains("1 to 500"), "{bad}");
        let bad = Browse::from_params(&params("limit", "many")).unwrap_err();
        assert!(bad.contains("limit"), "{bad}");
    }
}
