//! The web monitor (goka's `web` package): an overview of every registered processor, view
//! and emitter with its state, partitions and counters, a query page that looks a key up in
//! a table, a JSON API behind both (`/api/...`) and Prometheus metrics (`/metrics`).
//!
//! ```no_run
//! # async fn run<P: goka::processor::Stateful>(
//! #     processor: std::sync::Arc<goka::processor::Processor<P>>,
//! # ) -> std::io::Result<()>
//! # where <P as goka::processor::Stateful>::Value: serde::Serialize {
//! let monitor = goka::web::Monitor::new();
//! monitor.processor(&processor);       // state, partitions, counters, and its table to query
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9095").await?;
//! let cancel = tokio_util::sync::CancellationToken::new();
//! monitor.serve(listener, cancel).await
//! # }
//! ```
//!
//! Pages are rendered on the server and refresh themselves; `monitor.router()` returns the
//! axum router to mount under an application's own server instead (behind its own
//! authentication layer, if it has one).
//!
//! **What it exposes**: the names, states, offsets and counters of every registered
//! component, and through `/query` any key of every registered table, decoded. Bind it to
//! loopback (as above) or a private network, or require a token with
//! [`Monitor::with_bearer_token`]: every request must then carry
//! `Authorization: Bearer <token>`.

mod api;
mod metrics;
mod pages;
mod rates;
mod registry;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use self::registry::{Component, Queryable};
pub use self::registry::{ComponentKind, ComponentStats, PartitionRow, QueryError};

/// Keys longer than this are refused by the query endpoints.
pub const MAX_KEY_LEN: usize = 4096;

/// The registered components. Cheap to clone; clones share the registrations.
#[derive(Clone, Default)]
pub struct Monitor {
    inner: Arc<Inner>,
    /// Every request must carry it as `Authorization: Bearer <token>`, if set.
    token: Option<Arc<str>>,
}

#[derive(Default)]
struct Inner {
    components: RwLock<Vec<Registered>>,
    tables: RwLock<Vec<Arc<dyn Queryable>>>,
}

/// A component and the samples its rates are computed from.
struct Registered {
    component: Arc<dyn Component>,
    rates: Mutex<rates::Rates>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("components", &self.stats().len())
            .finish_non_exhaustive()
    }
}

impl Monitor {
    /// An empty monitor.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires `Authorization: Bearer <token>` on every request of the router (pages, API
    /// and metrics); others are answered 401.
    pub fn with_bearer_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Arc::from(token.into()));
        self
    }

    fn add(&self, component: Arc<dyn Component>) {
        self.inner
            .components
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Registered {
                component,
                rates: Mutex::default(),
            });
    }

    fn add_table(&self, table: Arc<dyn Queryable>) {
        self.inner
            .tables
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(table);
    }

    /// The figures of every registered component, in registration order, with the rates
    /// of their counters since the monitor last looked (over about ten seconds).
    pub fn stats(&self) -> Vec<ComponentStats> {
        let now = Instant::now();
        self.inner
            .components
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|registered| {
                let mut stats = registered.component.stats();
                stats.rates = registered
                    .rates
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .observe(now, &stats.counters);
                stats
            })
            .collect()
    }

    /// The names of the tables the query page can read.
    pub fn tables(&self) -> Vec<&'static str> {
        self.inner
            .tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|t| t.table())
            .collect()
    }

    /// Looks `key` (its text, decoded with the table's key codec) up in `table`, rendering
    /// the value as JSON.
    pub fn query(&self, table: &str, key: &str) -> Result<Option<serde_json::Value>, QueryError> {
        if key.len() > MAX_KEY_LEN {
            return Err(QueryError::KeyTooLong {
                len: key.len(),
                max: MAX_KEY_LEN,
            });
        }
        let source = self
            .inner
            .tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|t| t.table() == table)
            .cloned()
            .ok_or_else(|| QueryError::UnknownTable {
                table: table.to_owned(),
                known: self.tables().join(", "),
            })?;
        source.query(key)
    }

    /// The axum router of the pages, the API and the metrics.
    pub fn router(&self) -> axum::Router {
        use axum::routing::get;
        let router = axum::Router::new()
            .route("/", get(pages::overview))
            .route("/components/{name}", get(pages::detail))
            .route("/query", get(pages::query))
            .route("/api/components", get(api::components))
            .route("/api/query", get(api::query))
            .route("/metrics", get(metrics::metrics))
            .with_state(self.clone());
        match &self.token {
            Some(token) => router.layer(axum::middleware::from_fn_with_state(
                token.clone(),
                require_token,
            )),
            None => router,
        }
    }

    /// Serves [`router`](Self::router) on `listener` until `cancel` fires.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        cancel: CancellationToken,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await
    }
}

/// Answers 401 unless the request carries the monitor's bearer token.
async fn require_token(
    axum::extract::State(token): axum::extract::State<Arc<str>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
    if given.is_some_and(|given| same_secret(given, token.as_bytes())) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "this monitor requires `Authorization: Bearer <token>`\n",
    )
        .into_response()
}

/// Compares without stopping at the first difference, so the time taken does not tell how
/// much of a guess was right.
fn same_secret(given: &[u8], secret: &[u8]) -> bool {
    given.len() == secret.len()
        && given
            .iter()
            .zip(secret)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_match_only_when_equal() {
        assert!(super::same_secret(b"s3cret", b"s3cret"));
        assert!(!super::same_secret(b"s3cres", b"s3cret"));
        assert!(!super::same_secret(b"s3cre", b"s3cret"));
        assert!(!super::same_secret(b"", b"s3cret"));
    }
}
