//! Client configuration: the brokers plus any librdkafka property.

use std::collections::BTreeMap;

/// Configuration shared by every client of one cluster (goka's producer and consumer
/// builders). Common settings have methods; any other librdkafka property goes through
/// [`set`](KafkaConfig::set).
///
/// ```
/// let config = goka::kafka::KafkaConfig::new("localhost:9092")
///     .client_id("click-service")
///     .set("security.protocol", "SASL_SSL")
///     .set("sasl.mechanisms", "PLAIN");
/// assert_eq!(config.get("client.id"), Some("click-service"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    properties: BTreeMap<String, String>,
    reported_end_may_lag: bool,
}

impl KafkaConfig {
    /// A configuration for the cluster at `brokers` (`host:port[,host:port...]`).
    pub fn new(brokers: impl Into<String>) -> Self {
        let mut properties = BTreeMap::new();
        properties.insert("bootstrap.servers".to_owned(), brokers.into());
        properties.insert("client.id".to_owned(), "goka".to_owned());
        // Idempotent producers (librdkafka's default is off): Kafka writes a batch retried
        // after a lost answer or a leader change once, and keeps each partition's order with
        // up to five requests in flight, so changelog writes need no cap of one. A
        // Kafka-compatible broker that mishandles them (Tansu 0.6 reports wrong watermarks
        // with it) takes `.set("enable.idempotence", "false")`.
        properties.insert("enable.idempotence".to_owned(), "true".to_owned());
        Self {
            properties,
            reported_end_may_lag: false,
        }
    }

    /// Sets any librdkafka property.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// Removes a property set before, so that the client's default applies again.
    pub fn unset(mut self, key: &str) -> Self {
        self.properties.remove(key);
        self
    }

    /// The client id reported to the brokers.
    pub fn client_id(self, id: impl Into<String>) -> Self {
        self.set("client.id", id)
    }

    /// How long the producer waits to batch messages (`linger.ms`).
    pub fn linger_ms(self, ms: u32) -> Self {
        self.set("linger.ms", ms.to_string())
    }

    /// For a broker whose reported end of a partition (ListOffsets, the high watermark) can
    /// lag what it acknowledged, as Tansu 0.6 (a stand-in broker) reports the first offset of
    /// the last record batch. Off by default: Kafka's end is exact, so a table's local state
    /// beyond it is ahead of its changelog and reading stops at once with
    /// [`KafkaError::LocalStateAhead`](crate::kafka::KafkaError::LocalStateAhead). On, a local
    /// state beyond the reported end reads from that end and stops only if the partition ends
    /// before the local state's offset: a deferred check that a broker with exact ends does
    /// not need.
    pub fn reported_end_may_lag(mut self, may_lag: bool) -> Self {
        self.reported_end_may_lag = may_lag;
        self
    }

    /// Whether [`reported_end_may_lag`](Self::reported_end_may_lag) is on.
    pub fn reports_lagging_end(&self) -> bool {
        self.reported_end_may_lag
    }

    /// The value of a property.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.properties.get(key).map(String::as_str)
    }

    /// The brokers.
    pub fn brokers(&self) -> &str {
        self.get("bootstrap.servers").unwrap_or_default()
    }

    /// All properties.
    pub fn properties(&self) -> impl Iterator<Item = (&str, &str)> {
        self.properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}
