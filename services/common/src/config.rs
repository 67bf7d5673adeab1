//! Configuration, in layers: built-in defaults, then a TOML file, then
//! `RAPPORT_*` environment variables, then command-line flags. Each service
//! reads the same file (its own section plus `[kafka]`), validates it once at
//! start-up and refuses unknown keys.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::broker::BrokerKind;
use crate::{Error, Result};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `"keys"` (the default): every route but `/healthz` needs an API key.
    /// `"off"`: none does, and every start logs a warning.
    pub auth: AuthMode,
    /// Requests a second per key, by kind; failed attempts per client.
    pub rate_limits: RateLimits,
    pub kafka: KafkaConfig,
    pub topics: TopicNames,
    pub ingest: IngestConfig,
    pub identity: IdentityConfig,
    pub projector: ProjectorConfig,
    pub privacy: PrivacyConfig,
    /// Thresholds of the customer analytics (RFM, churn, CLV, lifecycle,
    /// value tiers, loyalty); see docs/analytics.md.
    pub analytics: rapport_projections::analytics::config::AnalyticsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]` of the Kafka-compatible cluster.
    pub brokers: String,
    /// Extra librdkafka properties (security.protocol, sasl.*, …), applied to
    /// every client after Rapport's own settings.
    pub properties: BTreeMap<String, String>,
    /// Which implementation the brokers run, `"kafka"` or `"tansu"` (the
    /// local broker): what it takes to read every offset once, in order
    /// (see `crate::broker` and docs/broker.md).
    pub broker_kind: BrokerKind,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".to_owned(),
            properties: BTreeMap::new(),
            broker_kind: BrokerKind::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicNames {
    pub raw: String,
    pub customer: String,
    pub deadletters: String,
    /// The API key registry (compacted).
    pub keys: String,
    /// Which projector process serves which customer-topic partitions
    /// (compacted).
    pub projectors: String,
}

impl Default for TopicNames {
    fn default() -> Self {
        Self {
            raw: "rapport.events.raw.v1".to_owned(),
            customer: "rapport.events.customer.v1".to_owned(),
            deadletters: "rapport.deadletters.v1".to_owned(),
            keys: "rapport.keys.v1".to_owned(),
            projectors: "rapport.projectors.v1".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    pub listen: SocketAddr,
    /// How long a produce may wait for the broker before the request gets 503.
    pub delivery_timeout_ms: u64,
    /// Events the producer may hold unacknowledged; past it requests get 503.
    pub max_queued_events: u32,
    /// Requests handled at once; past it requests get 503, so memory stays
    /// bounded (each may hold up to 1 MiB).
    pub max_in_flight_requests: usize,
    /// How long a request body may take to arrive before the request is
    /// answered 408 and its in-flight slot freed.
    pub body_read_timeout_ms: u64,
    /// The address browsers reach ingest at (`https://track.shop.example`),
    /// which the tracking settings and the snippet send analytics.js to.
    /// Without it, the `Host` the browser asked for, over plain HTTP.
    pub public_url: Option<String>,
    /// Per write key id, the page origins (`https://shop.example`) whose
    /// browsers may send events with it; a key not listed takes any origin.
    pub allowed_origins: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8080).into(),
            delivery_timeout_ms: 5_000,
            max_queued_events: 100_000,
            max_in_flight_requests: 64,
            body_read_timeout_ms: 10_000,
            public_url: None,
            allowed_origins: Default::default(),
        }
    }
}

/// Whether requests need API keys (the gate is in `apikeys`). `off` exists for a closed network and for
/// trying things out; every start with it logs a warning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    #[default]
    Keys,
    Off,
}

/// Requests per second a key of each kind may make (a burst of one
/// second's worth), and failed attempts a client address may make per
/// minute before it is answered 429.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    pub write_per_second: u32,
    pub read_per_second: u32,
    pub admin_per_second: u32,
    /// Rapport's own services fetching vault keys.
    pub service_per_second: u32,
    pub failed_auth_per_minute: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            write_per_second: 1_000,
            read_per_second: 100,
            admin_per_second: 100,
            service_per_second: 10_000,
            failed_auth_per_minute: 60,
        }
    }
}

impl RateLimits {
    pub fn validate(&self) -> crate::Result<()> {
        for (key, value) in [
            ("rate_limits.write_per_second", self.write_per_second),
            ("rate_limits.read_per_second", self.read_per_second),
            ("rate_limits.admin_per_second", self.admin_per_second),
            ("rate_limits.service_per_second", self.service_per_second),
            (
                "rate_limits.failed_auth_per_minute",
                self.failed_auth_per_minute,
            ),
        ] {
            if value == 0 {
                return Err(crate::Error::Config(format!(
                    "{key} = 0 would refuse every request; give a positive rate"
                )));
            }
        }
        Ok(())
    }
}

/// How ingest seals personal fields and the projector opens them: both
/// reach the vault on identity with a service key.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Identity's URL, where the vault answers.
    pub vault_url: String,
    /// A service key (`rapportctl keys create --kind service`); better
    /// given as `RAPPORT_SERVICE_KEY` than written here.
    pub service_key: String,
    /// `"on"`: ingest seals personal fields. `"off"` writes them in clear,
    /// which only benchmarks comparing the two should do; every start with
    /// it logs a warning.
    pub sealing: Sealing,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sealing {
    #[default]
    On,
    Off,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            vault_url: "http://127.0.0.1:8082".to_owned(),
            service_key: String::new(),
            sealing: Sealing::On,
        }
    }
}

impl PrivacyConfig {
    /// Connects to the vault, or says what is missing. Blocking.
    pub fn vault(&self, patience: std::time::Duration) -> Result<crate::vault_client::VaultClient> {
        let key = std::env::var("RAPPORT_SERVICE_KEY")
            .ok()
            .filter(|key| !key.trim().is_empty())
            .unwrap_or_else(|| self.service_key.clone());
        crate::vault_client::VaultClient::connect(&self.vault_url, key.trim(), patience)
    }
}

/// RocksDB's own default memtable size, 64 MiB.
pub const DEFAULT_MEMTABLE_BYTES: usize = 64 << 20;
/// The smallest memtable a service accepts: below it RocksDB would flush
/// a file for every few commits.
pub const MIN_MEMTABLE_BYTES: usize = 64 << 10;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The vault: data keys and the pseudonym key. The one directory that
    /// cannot be rebuilt from the log; back it up, and let backups expire.
    pub vault_dir: PathBuf,
    /// How long a record waits for possibly earlier records on other raw
    /// partitions before it is resolved; see docs/identity.md.
    pub reorder_grace_ms: u64,
    /// Most raw events resolved per committed batch.
    pub max_batch: usize,
    /// Bytes of the graph's RocksDB memtable before it is flushed to a file.
    pub memtable_bytes: usize,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8082).into(),
            data_dir: "data/identity".into(),
            vault_dir: "data/vault".into(),
            reorder_grace_ms: 200,
            max_batch: 2_000,
            memtable_bytes: DEFAULT_MEMTABLE_BYTES,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectorConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Most records applied per RocksDB write batch. Reached only while a
    /// worker is behind (a batch otherwise ends after 50 ms), so it is the
    /// batch size of a rebuild: larger batches insert their sorted keys into
    /// RocksDB's memtable with better locality, at the price of memory.
    pub max_batch: usize,
    /// Customer-topic partitions this process owns; empty means all.
    pub partitions: Vec<i32>,
    /// Where the other projectors reach this one's query API
    /// (`http://10.0.0.2:8081`); announced on the projectors topic. Default
    /// `http://` and `listen`, which only works when `listen` names an
    /// address the others can reach.
    pub url: Option<String>,
    /// Bytes of a projection's RocksDB memtable before it is flushed to a
    /// file. Projections skip RocksDB's write-ahead log (the customer topic
    /// is theirs), so after a crash a projection refolds what its memtable
    /// held: this bounds the work a restart redoes, and the memory a
    /// projection version takes.
    pub memtable_bytes: usize,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8081).into(),
            data_dir: "data/projector".into(),
            max_batch: 20_000,
            partitions: Vec::new(),
            url: None,
            memtable_bytes: DEFAULT_MEMTABLE_BYTES,
        }
    }
}

impl Config {
    /// Defaults, overlaid with the TOML file when one is given.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::Config(format!("cannot read {}: {source}", path.display())))?;
        Self::parse(&text)
            .map_err(|message| Error::Config(format!("{}: {message}", path.display())))
    }

    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        toml::from_str(text).map_err(|error| error.to_string())
    }
}

/// Puts a flag's (or environment variable's) value over the file's, when
/// one was given.
pub fn override_with<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// Flags every service accepts; each also reads a `RAPPORT_*` variable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CommonArgs {
    /// TOML configuration file (see infra/rapport.example.toml).
    #[arg(long, env = "RAPPORT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers, host:port[,host:port…]. Default 127.0.0.1:9092.
    #[arg(long, env = "RAPPORT_BROKERS")]
    pub brokers: Option<String>,
    /// What the brokers run: `kafka` (Apache Kafka or a faithful managed
    /// service) or `tansu` (the local broker, the default). Against tansu
    /// the readers work around its quirks (docs/broker.md).
    #[arg(long, env = "RAPPORT_BROKER_KIND", value_enum)]
    pub broker_kind: Option<BrokerKind>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "RAPPORT_LOG_JSON")]
    pub log_json: bool,
    /// Identity's URL, where ingest and the projector reach the vault.
    /// Default http://127.0.0.1:8082.
    #[arg(long, env = "RAPPORT_VAULT_URL")]
    pub vault_url: Option<String>,
}

impl CommonArgs {
    /// Loads the file and applies the flags that are common to all services.
    pub fn load(&self) -> Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(brokers) = &self.brokers {
            config.kafka.brokers = brokers.clone();
        }
        override_with(&mut config.kafka.broker_kind, self.broker_kind);
        override_with(&mut config.privacy.vault_url, self.vault_url.clone());
        if config.kafka.brokers.trim().is_empty() {
            return Err(Error::Config(
                "kafka.brokers must name at least one broker".to_owned(),
            ));
        }
        config
            .analytics
            .validate()
            .map_err(|error| Error::Config(error.to_string()))?;
        config.rate_limits.validate()?;
        Ok(config)
    }
}

impl Config {
    /// Checks what the flags may have changed after [`CommonArgs::load`].
    pub fn validate(&self) -> Result<()> {
        if self.ingest.body_read_timeout_ms == 0 {
            return Err(Error::Config(
                "ingest.body_read_timeout_ms = 0 would refuse every body; give a positive time"
                    .to_owned(),
            ));
        }
        for (key, url) in [
            ("ingest.public_url", &self.ingest.public_url),
            ("projector.url", &self.projector.url),
        ] {
            if let Some(url) = url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(Error::Config(format!(
                    "{key} = {url:?} must start with http:// or https://"
                )));
            }
        }
        if let Some(partition) = self.projector.partitions.iter().find(|p| **p < 0) {
            return Err(Error::Config(format!(
                "projector.partitions holds {partition}; partitions are numbered from 0"
            )));
        }
        for (key, bytes) in [
            ("identity.memtable_bytes", self.identity.memtable_bytes),
            ("projector.memtable_bytes", self.projector.memtable_bytes),
        ] {
            if bytes < MIN_MEMTABLE_BYTES {
                return Err(Error::Config(format!(
                    "{key} = {bytes} is below the smallest memtable, {MIN_MEMTABLE_BYTES} bytes"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_states_the_defaults() {
        let example = include_str!("../../../infra/rapport.example.toml");
        let config = Config::parse(example).expect("the example parses");
        let defaults = Config::default();
        assert_eq!(config.analytics, defaults.analytics);
        assert_eq!(config.projector.max_batch, defaults.projector.max_batch);
        assert_eq!(
            config.projector.memtable_bytes,
            defaults.projector.memtable_bytes
        );
        assert_eq!(
            config.identity.memtable_bytes,
            defaults.identity.memtable_bytes
        );
        config.validate().expect("the example is valid");
        assert_eq!(config.topics.customer, defaults.topics.customer);
        assert_eq!(config.topics.keys, defaults.topics.keys);
        assert_eq!(config.auth, defaults.auth);
        assert_eq!(config.rate_limits, defaults.rate_limits);
        assert_eq!(
            config.ingest.body_read_timeout_ms,
            defaults.ingest.body_read_timeout_ms
        );
        config.analytics.validate().expect("the defaults are valid");
        // A broken threshold is refused with its key named
        let broken = example.replace("p_alive_below = 0.5", "p_alive_below = 1.5");
        let error = Config::parse(&broken)
            .unwrap()
            .analytics
            .validate()
            .unwrap_err();
        assert!(error.to_string().contains("churn.p_alive_below"), "{error}");
    }

    #[test]
    fn defaults_match_the_readme() {
        let config = Config::default();
        assert_eq!(config.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(config.ingest.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.projector.listen.to_string(), "127.0.0.1:8081");
    }

    #[test]
    fn the_file_overrides_defaults_section_by_section() {
        let config =
            Config::parse("[kafka]\nbrokers = \"k1:9092,k2:9092\"\n[projector]\nmax_batch = 10\n")
                .unwrap();
        assert_eq!(config.kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(config.projector.max_batch, 10);
        assert_eq!(config.ingest.listen.port(), 8080);
    }

    #[test]
    fn a_memtable_below_the_smallest_is_refused_by_name() {
        let config = Config::parse("[projector]\nmemtable_bytes = 1024\n").unwrap();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("projector.memtable_bytes = 1024"), "{error}");
        let config = Config::parse("[identity]\nmemtable_bytes = 65536\n").unwrap();
        config.validate().expect("the smallest is allowed");
    }

    #[test]
    fn auth_is_on_unless_switched_off_by_name() {
        assert_eq!(Config::default().auth, AuthMode::Keys);
        assert_eq!(
            Config::parse("auth = \"off\"\n").unwrap().auth,
            AuthMode::Off
        );
        let error = Config::parse("auth = \"no\"\n").unwrap_err();
        assert!(error.contains("auth") || error.contains("no"), "{error}");
        let config = Config::parse("[rate_limits]\nread_per_second = 0\n").unwrap();
        let error = config.rate_limits.validate().unwrap_err().to_string();
        assert!(error.contains("rate_limits.read_per_second"), "{error}");
    }

    #[test]
    fn unknown_keys_are_an_error() {
        let error = Config::parse("[projector]\nmax_bacth = 10\n").unwrap_err();
        assert!(error.contains("max_bacth"), "{error}");
        assert!(Config::parse("[nope]\n").is_err());
    }

    #[test]
    fn the_broker_kind_is_read_and_a_wrong_one_is_named() {
        assert_eq!(Config::default().kafka.broker_kind, BrokerKind::Tansu);
        let config = Config::parse("[kafka]\nbroker_kind = \"kafka\"\n").unwrap();
        assert_eq!(config.kafka.broker_kind, BrokerKind::Kafka);
        let error = Config::parse("[kafka]\nbroker_kind = \"redpanda\"\n").unwrap_err();
        assert!(
            error.contains("broker_kind") || error.contains("redpanda"),
            "{error}"
        );
    }
}
