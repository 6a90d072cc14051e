//! The web monitor (goka's `web` package): an overview of every registered processor, view
//! and emitter with its state, partitions and counters, a query page that looks a key up in
//! a table, a JSON API behind both (`/api/...`) and Prometheus metrics (`/metrics`).
//!
//! ```no_run
//! # async fn run<P: goka::processor::Stateful + goka::processor::Handlers>(
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
//! Pages are rendered on the server and refresh themselves, with charts drawn as inline SVG
//! from a history of the last five minutes the monitor samples once a second (messages in
//! and out per second, lag, per partition on the detail pages, recovery as a bar per
//! partition, handler latency as a histogram), and a table browser that pages through a
//! processor's or view's rows. Nothing is fetched from elsewhere: the pages work offline.
//! `monitor.router()` returns the axum router to mount under an application's own server
//! instead (behind its own authentication layer, if it has one), with `monitor.sample(..)`
//! running beside it.
//!
//! **What it exposes**: the names, states, offsets and counters of every registered
//! component, and through `/query` any key of every registered table, decoded. Bind it to
//! loopback (as above) or a private network, or require a token with
//! [`Monitor::with_bearer_token`]: every request must then carry
//! `Authorization: Bearer <token>`.

mod api;
mod browse;
mod chart;
mod history;
mod html;
mod metrics;
mod pages;
mod registry;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use self::browse::{Row, RowsPage, DEFAULT_PAGE, MAX_PAGE};
use self::history::History;
pub use self::history::{PartitionSeries, Series, CAPACITY as HISTORY_SAMPLES};
use self::registry::{
    Component, EmitterComponent, ProcessorComponent, ProcessorTable, Queryable, ViewComponent,
};
pub use self::registry::{
    ComponentKind, ComponentStats, InputRow, OutputRow, PartitionRow, QueryError,
};
use crate::emitter::Emitter;
use crate::processor::{Handlers, Processor, Stateful};
use crate::topic::{Stream, Table};
use crate::view::View;

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

/// A component, its table if the browser can list it, and what the monitor remembers of it.
struct Registered {
    component: Arc<dyn Component>,
    table: Option<Arc<dyn Queryable>>,
    history: Mutex<History>,
}

/// A component's figures with its history, as a detail page shows them.
struct Snapshot {
    stats: ComponentStats,
    series: Series,
    table: Option<Arc<dyn Queryable>>,
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

    fn add(&self, component: Arc<dyn Component>, table: Option<Arc<dyn Queryable>>) {
        self.inner
            .components
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Registered {
                component,
                table,
                history: Mutex::default(),
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
    /// of their counters over the last ten seconds or so, and each partition marked
    /// stalled or lagging from the monitor's history. Each call is also a sample of the
    /// history (at most one a second is kept).
    pub fn stats(&self) -> Vec<ComponentStats> {
        self.snapshots(|_| true)
            .into_iter()
            .map(|snapshot| snapshot.stats)
            .collect()
    }

    /// The history of the components named `name` (a processor's group, a view's or an
    /// emitter's topic): the samples its charts draw.
    pub fn history(&self, name: &str) -> Vec<(ComponentKind, Series)> {
        self.snapshots(|stats| stats.name == name)
            .into_iter()
            .map(|snapshot| (snapshot.stats.kind, snapshot.series))
            .collect()
    }

    /// Samples every component once a second until `cancel` fires, so the charts have a
    /// point per second whether or not anyone is looking. [`serve`](Self::serve) runs it;
    /// run it beside [`router`](Self::router) when mounting the monitor elsewhere.
    pub async fn sample(&self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(history::SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {
                    self.stats();
                }
            }
        }
    }

    fn snapshots(&self, wanted: impl Fn(&ComponentStats) -> bool) -> Vec<Snapshot> {
        let now = Instant::now();
        self.inner
            .components
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|registered| {
                let mut stats = registered.component.stats();
                let mut history = registered.history.lock().unwrap_or_else(|p| p.into_inner());
                history.observe(now, &stats);
                stats.rates = history.rates();
                for row in &mut stats.partitions {
                    row.stalled |= history.stuck(row.partition);
                    row.lagging = !row.stalled && history.lagging(row.partition);
                }
                wanted(&stats).then(|| Snapshot {
                    series: history.series(),
                    table: registered.table.clone(),
                    stats,
                })
            })
            .collect()
    }

    /// A page of the rows of `table` in key order, as the table browser lists them.
    fn rows(&self, table: &str, browse: &browse::Browse) -> Result<RowsPage, QueryError> {
        browse::page(&*self.find_table(table)?, browse)
    }

    fn find_table(&self, table: &str) -> Result<Arc<dyn Queryable>, QueryError> {
        self.inner
            .tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|t| t.table() == table)
            .cloned()
            .ok_or_else(|| QueryError::UnknownTable {
                table: table.to_owned(),
                known: self.tables().join(", "),
            })
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
        self.find_table(table)?.query(key)
    }

    /// The axum router of the pages, the API and the metrics.
    pub fn router(&self) -> axum::Router {
        use axum::routing::get;
        let router = axum::Router::new()
            .route("/", get(pages::overview))
            .route("/components/{name}", get(pages::detail))
            .route("/query", get(pages::query))
            .route("/api/components", get(api::components))
            .route("/api/components/{name}/history", get(api::history))
            .route("/api/query", get(api::query))
            .route("/api/rows", get(api::rows))
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

    /// Serves [`router`](Self::router) on `listener` until `cancel` fires, sampling the
    /// components' history meanwhile ([`sample`](Self::sample)).
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        cancel: CancellationToken,
    ) -> std::io::Result<()> {
        let server = axum::serve(listener, self.router()).with_graceful_shutdown({
            let cancel = cancel.clone();
            async move { cancel.cancelled().await }
        });
        let (served, ()) = tokio::join!(async move { server.await }, self.sample(cancel));
        served
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

impl Monitor {
    /// Registers a processor: its state, partitions and counters, and its group table on
    /// the query page (values rendered as JSON).
    pub fn processor<P: Stateful + Handlers>(&self, processor: &Arc<Processor<P>>)
    where
        <P as Stateful>::Value: Serialize,
    {
        let table: Arc<dyn Queryable> = Arc::new(ProcessorTable(processor.clone()));
        self.add(
            Arc::new(ProcessorComponent(processor.clone())),
            Some(table.clone()),
        );
        self.add_table(table);
    }

    /// Registers a processor without a group table (or whose values are not `Serialize`).
    pub fn stateless_processor<P: Handlers>(&self, processor: &Arc<Processor<P>>) {
        self.add(Arc::new(ProcessorComponent(processor.clone())), None);
    }

    /// Registers a view: its state and partitions, and its table on the query page.
    pub fn view<T: Table>(&self, view: &View<T>)
    where
        T::Value: Serialize,
    {
        let component = Arc::new(ViewComponent(view.clone()));
        self.add(component.clone(), Some(component.clone()));
        self.add_table(component);
    }

    /// Registers an emitter: its counters.
    pub fn emitter<T: Stream>(&self, emitter: &Emitter<T>) {
        self.add(Arc::new(EmitterComponent(emitter.clone())), None);
    }
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
