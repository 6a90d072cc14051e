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
}

impl KafkaConfig {
    /// A configuration for the cluster at `brokers` (`host:port[,host:port...]`).
    pub fn new(brokers: impl Into<String>) -> Self {
        let mut properties = BTreeMap::new();
        properties.insert("bootstrap.servers".to_owned(), brokers.into());
        properties.insert("client.id".to_owned(), "goka".to_owned());
        // goka and librdkafka default to non-idempotent producers; some Kafka-compatible
        // brokers report wrong watermarks with idempotence on.
        properties.insert("enable.idempotence".to_owned(), "false".to_owned());
        Self { properties }
    }

    /// Sets any librdkafka property.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
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
