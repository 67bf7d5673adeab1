//! Versions of the identifier graph: re-identification from the raw topic.
//!
//! A version is a second resolver with its own graph column family
//! (`identity.version.<name>`) and its own customer topic
//! (`<customer topic>.<name>`), reading the raw topic from the beginning in
//! the same order as the live resolver. When it starts, a RocksDB checkpoint
//! of the database freezes the live graph (the *baseline*), and the live
//! resolver's committed raw offsets in that checkpoint become the version's
//! bounds: it resolves exactly the records the baseline had resolved, so the
//! two graphs can be compared key by key while live traffic goes on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rapport_common::admin::GraphDropped;
use rapport_common::config::{Config, TopicNames};
use rapport_common::http::{ApiError, FieldError};
use rapport_common::kafka::block_on;
use rapport_common::metrics::Registry;
use rapport_common::status::WorkerStatus;
use rapport_common::store::Store;
use rapport_common::topics::{self, Role};
use rapport_common::{Error, keys};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::{Deserialize, Serialize};

use crate::compare::Comparison;
use crate::generations::Generations;
use crate::{FAMILY, IdentityMetrics, Resolver, Stopped, committed_offsets, run_resolver};

/// Where the specs of versions are kept.
pub const VERSIONS: &str = "identity.versions";
/// The name the live graph goes by (in `rapportctl status`); no version may take it.
pub const LIVE_VERSION: &str = "v1";

/// The column family of a version's graph.
pub fn family_of(version: &str) -> String {
    format!("identity.version.{version}")
}

/// Where the baselines (checkpoints of the live graph) of `data_dir` live:
/// beside it, never inside RocksDB's own directory.
pub fn baselines_dir(data_dir: &Path) -> PathBuf {
    let name = data_dir
        .file_name()
        .map_or_else(|| "identity".into(), |name| name.to_string_lossy());
    data_dir.with_file_name(format!("{name}.baselines"))
}

/// What a version is built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionSpec {
    pub version: String,
    /// The customer topic it writes.
    pub topic: String,
    /// Per raw partition the last offset to resolve: the live resolver's
    /// committed offsets in the baseline.
    pub bounds: Vec<Option<i64>>,
    pub created_at_ms: i64,
}

/// Why a request about versions was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum VersionError {
    /// The request breaks a rule (400).
    Invalid(String),
    /// The name or its topic is taken (409).
    Exists(String),
    NotFound(String),
    /// The version has not reached its bounds yet (409).
    NotReady(String),
    /// The broker could not be asked (503).
    Unavailable(String),
    /// Storage or the broker failed (500).
    Failed(String),
}

impl From<VersionError> for ApiError {
    fn from(error: VersionError) -> Self {
        match error {
            VersionError::Invalid(message) => ApiError::Invalid {
                message: "bad version".to_owned(),
                details: vec![FieldError {
                    index: None,
                    field: "version".to_owned(),
                    message,
                }],
            },
            VersionError::Exists(message) | VersionError::NotReady(message) => {
                ApiError::Conflict(message)
            }
            VersionError::NotFound(message) => ApiError::NotFound(message),
            VersionError::Unavailable(message) => ApiError::Unavailable {
                message,
                retry_after_s: 5,
            },
            VersionError::Failed(message) => ApiError::Internal(message),
        }
    }
}

impl From<Error> for VersionError {
    fn from(error: Error) -> Self {
        VersionError::Failed(error.to_string())
    }
}

pub use rapport_common::admin::GraphVersionState;

struct Worker {
    spec: VersionSpec,
    stop: Arc<AtomicBool>,
    status: Arc<WorkerStatus>,
    metrics: IdentityMetrics,
    state: Arc<Mutex<GraphVersionState>>,
    thread: Option<JoinHandle<rapport_common::Result<Stopped>>>,
}

pub use rapport_common::admin::{GraphPartition, GraphVersion};

/// Runs a worker per version and creates, drops and compares versions.
pub struct Versions {
    config: Config,
    store: Store,
    baselines: PathBuf,
    generations: Arc<Generations>,
    workers: Mutex<BTreeMap<String, Worker>>,
    /// Held while a version is created, dropped or compared, so none of
    /// these sees another half-done.
    lifecycle: Mutex<()>,
}

fn valid_name(version: &str) -> Result<(), VersionError> {
    let valid = !version.is_empty()
        && version.len() <= 64
        && version
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if valid {
        Ok(())
    } else {
        Err(VersionError::Invalid(format!(
            "version name {version:?} must be 1-64 letters, digits, - or _"
        )))
    }
}

fn failed(context: &str) -> impl Fn(Error) -> VersionError + '_ {
    move |error| VersionError::Failed(format!("{context}: {error}"))
}

impl Versions {
    /// Loads the versions in the store and starts a worker for each;
    /// removes baselines that no version owns (left by a crash mid-create).
    pub fn start(
        config: Config,
        store: Store,
        baselines: PathBuf,
        generations: Arc<Generations>,
    ) -> rapport_common::Result<Arc<Self>> {
        store.create_family(VERSIONS)?;
        let mut specs = Vec::new();
        for (_, value) in store.scan_prefix(VERSIONS, &[keys::VERSION_SPEC], usize::MAX)? {
            specs.push(
                postcard::from_bytes::<VersionSpec>(&value)
                    .map_err(|error| Error::State(error.into()))?,
            );
        }
        if let Ok(entries) = std::fs::read_dir(&baselines) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !specs.iter().any(|spec| spec.version == name) {
                    tracing::info!(baseline = %entry.path().display(), "removing a baseline no version owns");
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let versions = Arc::new(Self {
            config,
            store,
            baselines,
            generations,
            workers: Mutex::new(BTreeMap::new()),
            lifecycle: Mutex::new(()),
        });
        for spec in specs {
            versions.spawn(spec)?;
        }
        Ok(versions)
    }

    fn spawn(&self, spec: VersionSpec) -> rapport_common::Result<()> {
        let resolver = Resolver {
            family: family_of(&spec.version),
            topics: TopicNames {
                customer: spec.topic.clone(),
                ..self.config.topics.clone()
            },
            bounds: Some(spec.bounds.clone()),
            dead_letters: false,
            client_id: format!("rapport-identity-{}", spec.version),
            generations: self.generations.clone(),
            // Its bounds are at or before the cut of any erasure made
            // since it started, so none changes what it resolves.
            cuts_erasures: false,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let status = WorkerStatus::new(&self.config.topics.raw);
        // Its own registry: /metrics shows the live resolver only.
        let metrics = IdentityMetrics::new(&Registry::default());
        let state = Arc::new(Mutex::new(GraphVersionState::Running));
        let thread = {
            let (config, store, stop, metrics, state) = (
                self.config.clone(),
                self.store.clone(),
                stop.clone(),
                metrics.clone(),
                state.clone(),
            );
            let worker_status = status.clone();
            rapport_common::worker::spawn(
                format!("reidentify-{}", spec.version),
                status.clone(),
                move || run_resolver(&resolver, &config, &store, &stop, &metrics, &worker_status),
                move |outcome| {
                    *state.lock().expect("state lock") = match outcome {
                        Ok(Stopped::ReachedBounds) => GraphVersionState::Finished,
                        Ok(Stopped::Asked) => GraphVersionState::Stopped,
                        Err(_) => GraphVersionState::Failed,
                    };
                },
            )?
        };
        self.workers.lock().expect("versions lock").insert(
            spec.version.clone(),
            Worker {
                spec,
                stop,
                status,
                metrics,
                state,
                thread: Some(thread),
            },
        );
        Ok(())
    }

    /// Starts re-identifying into a new version, bounded by the live
    /// resolver's committed offsets now. On any error nothing is left
    /// behind: no topic, baseline, column family or spec.
    pub fn create(&self, version: Option<String>) -> Result<GraphVersion, VersionError> {
        let _lifecycle = self.lifecycle.lock().expect("lifecycle lock");
        let version = match version {
            Some(version) => version,
            None => {
                let workers = self.workers.lock().expect("versions lock");
                (2..)
                    .map(|number| format!("v{number}"))
                    .find(|name| !workers.contains_key(name))
                    .expect("a free name")
            }
        };
        valid_name(&version)?;
        if version == LIVE_VERSION {
            return Err(VersionError::Exists(format!(
                "{LIVE_VERSION} is the live graph; choose another name"
            )));
        }
        if self
            .workers
            .lock()
            .expect("versions lock")
            .contains_key(&version)
        {
            return Err(VersionError::Exists(format!(
                "version {version} already exists; drop it first"
            )));
        }
        let topic = format!("{}.{version}", self.config.topics.customer);
        let layout = self.topic_layout(&topic)?;
        if layout.version_topic_exists {
            return Err(VersionError::Exists(format!(
                "topic {topic} already exists (left from an earlier version?); delete it or choose another name"
            )));
        }
        self.create_topic(&topic, layout.customer_partitions, layout.replication)?;

        let baseline = self.baselines.join(&version);
        let family = family_of(&version);
        let started = (|| -> Result<VersionSpec, VersionError> {
            if baseline.exists() {
                std::fs::remove_dir_all(&baseline).map_err(|error| {
                    VersionError::Failed(format!("removing {}: {error}", baseline.display()))
                })?;
            }
            std::fs::create_dir_all(&self.baselines).map_err(|error| {
                VersionError::Failed(format!("creating {}: {error}", self.baselines.display()))
            })?;
            self.store
                .checkpoint(&baseline)
                .map_err(failed("freezing the live graph"))?;
            let bounds = {
                let frozen =
                    Store::open_read_only(&baseline).map_err(failed("reading the baseline"))?;
                committed_offsets(&frozen, FAMILY, layout.raw_partitions)?
            };
            // A family without a spec is a leftover of a crash mid-create.
            if self.store.has_family(&family) {
                self.store.drop_family(&family)?;
            }
            self.store.create_family(&family)?;
            let spec = VersionSpec {
                version: version.clone(),
                topic: topic.clone(),
                bounds,
                created_at_ms: rapport_common::now_ms(),
            };
            let mut staged = self.store.stage(VERSIONS);
            staged.put(
                keys::version_spec(&version),
                postcard::to_stdvec(&spec).expect("specs serialise"),
            );
            staged.commit()?;
            Ok(spec)
        })();
        let spec = match started {
            Ok(spec) => spec,
            Err(error) => {
                tracing::warn!(
                    version,
                    ?error,
                    "re-identification not started; removing what it created"
                );
                let _ = std::fs::remove_dir_all(&baseline);
                if self.store.has_family(&family) {
                    let _ = self.store.drop_family(&family);
                }
                let _ = self.delete_topic(&topic);
                return Err(error);
            }
        };
        tracing::info!(version, topic, bounds = ?spec.bounds, "re-identification started");
        self.spawn(spec)?;
        self.report(&version)
    }

    /// Stops a version's worker and deletes its graph, baseline and topic.
    pub fn drop_version(&self, version: &str) -> Result<GraphDropped, VersionError> {
        let _lifecycle = self.lifecycle.lock().expect("lifecycle lock");
        if version == LIVE_VERSION {
            return Err(VersionError::Exists(format!(
                "{LIVE_VERSION} is the live graph; it cannot be dropped"
            )));
        }
        let mut worker = self
            .workers
            .lock()
            .expect("versions lock")
            .remove(version)
            .ok_or_else(|| VersionError::NotFound(format!("no version {version}")))?;
        worker.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = worker.thread.take() {
            let _ = thread.join();
        }
        let mut staged = self.store.stage(VERSIONS);
        staged.delete(keys::version_spec(version));
        staged.commit()?;
        self.store.drop_family(&family_of(version))?;
        let _ = std::fs::remove_dir_all(self.baselines.join(version));
        let topic_deleted = match self.delete_topic(&worker.spec.topic) {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(topic = %worker.spec.topic, ?error, "could not delete a version's topic");
                false
            }
        };
        tracing::info!(version, topic_deleted, "dropped a graph version");
        Ok(GraphDropped {
            dropped: version.to_owned(),
            topic: worker.spec.topic.clone(),
            topic_deleted,
        })
    }

    /// Compares a finished version's graph with the baseline it was bounded by.
    pub fn compare(&self, version: &str) -> Result<Comparison, VersionError> {
        let _lifecycle = self.lifecycle.lock().expect("lifecycle lock");
        let report = self.report(version)?;
        if report.state != GraphVersionState::Finished {
            return Err(VersionError::NotReady(format!(
                "version {version} is {:?} at {} of {} raw records; compare once it finished",
                report.state, report.raw_records_read, report.raw_records_total
            )));
        }
        let baseline = Store::open_read_only(&self.baselines.join(version))
            .map_err(failed("opening the baseline"))?;
        // The baseline never changes and a finished version is no longer
        // written, so both are read as they stand.
        let comparison = crate::compare::compare(
            baseline.entries_from(FAMILY, &[])?,
            self.store.entries_from(&report.family, &[])?,
        )?;
        Ok(comparison)
    }

    pub fn report(&self, version: &str) -> Result<GraphVersion, VersionError> {
        let workers = self.workers.lock().expect("versions lock");
        let worker = workers
            .get(version)
            .ok_or_else(|| VersionError::NotFound(format!("no version {version}")))?;
        Ok(self.report_of(worker))
    }

    pub fn reports(&self) -> Vec<GraphVersion> {
        let workers = self.workers.lock().expect("versions lock");
        workers
            .values()
            .map(|worker| self.report_of(worker))
            .collect()
    }

    fn report_of(&self, worker: &Worker) -> GraphVersion {
        let consumer = worker.status.report();
        let applied: BTreeMap<i32, i64> = consumer
            .partitions
            .iter()
            .filter_map(|status| {
                status
                    .applied_offset
                    .map(|offset| (status.partition, offset))
            })
            .collect();
        let partitions: Vec<GraphPartition> = worker
            .spec
            .bounds
            .iter()
            .enumerate()
            .map(|(partition, bound)| GraphPartition {
                partition: partition as i32,
                bound: *bound,
                applied_offset: applied.get(&(partition as i32)).copied(),
            })
            .collect();
        let count = |offset: Option<i64>| offset.map_or(0, |offset| offset + 1);
        GraphVersion {
            version: worker.spec.version.clone(),
            family: family_of(&worker.spec.version),
            topic: worker.spec.topic.clone(),
            created_at: rapport_projections::time::format_rfc3339(worker.spec.created_at_ms),
            state: *worker.state.lock().expect("state lock"),
            raw_records_total: partitions
                .iter()
                .map(|progress| count(progress.bound))
                .sum(),
            raw_records_read: partitions
                .iter()
                .map(|progress| count(progress.applied_offset).min(count(progress.bound)))
                .sum(),
            partitions,
            dead_letters_skipped: worker.metrics.dead_letters.get(),
            graph_bytes: self.store.size_on_disk(&family_of(&worker.spec.version)),
            compaction_pending_bytes: self
                .store
                .pending_compaction_bytes(&family_of(&worker.spec.version)),
            consumer,
        }
    }

    /// Asks every worker to stop after its current batch and waits for them.
    pub fn stop_all(&self) {
        let mut workers = self.workers.lock().expect("versions lock");
        rapport_common::worker::stop_and_join(
            workers
                .values_mut()
                .map(|worker| (&*worker.stop, &mut worker.thread)),
        );
    }

    fn topic_layout(&self, version_topic: &str) -> Result<TopicLayout, VersionError> {
        let unavailable = |error: rdkafka::error::KafkaError| {
            VersionError::Unavailable(format!("could not read the cluster's topics: {error}"))
        };
        let client: BaseConsumer =
            rapport_common::kafka::client_config(&self.config.kafka, "rapport-identity-admin")
                .create()
                .map_err(unavailable)?;
        let metadata = client
            .fetch_metadata(None, Duration::from_secs(10))
            .map_err(unavailable)?;
        let find = |name: &str| {
            metadata
                .topics()
                .iter()
                .find(|topic| topic.name() == name && !topic.partitions().is_empty())
        };
        let missing = |name: &str| VersionError::Failed(format!("topic {name} does not exist"));
        let customer = find(&self.config.topics.customer)
            .ok_or_else(|| missing(&self.config.topics.customer))?;
        let raw = find(&self.config.topics.raw).ok_or_else(|| missing(&self.config.topics.raw))?;
        Ok(TopicLayout {
            raw_partitions: raw.partitions().len() as i32,
            customer_partitions: customer.partitions().len() as i32,
            replication: customer.partitions()[0].replicas().len().max(1) as i32,
            version_topic_exists: find(version_topic).is_some(),
        })
    }

    fn admin_client(&self) -> Result<AdminClient<DefaultClientContext>, VersionError> {
        rapport_common::kafka::client_config(&self.config.kafka, "rapport-identity-admin")
            .create()
            .map_err(|error| {
                VersionError::Unavailable(format!("creating an admin client: {error}"))
            })
    }

    /// Creates the version's customer topic like the live one: same
    /// partitions (so every customer lands on the same partition number),
    /// same replication, the customer topic's configuration from the topic
    /// definition. Waits until it is visible.
    fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication: i32,
    ) -> Result<(), VersionError> {
        let admin = self.admin_client()?;
        let config = topics::config_for(Role::Customer);
        let new_topic = topics::new_topic(topic, partitions, replication, &config);
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = block_on(admin.create_topics([&new_topic], &options)).map_err(|error| {
            VersionError::Unavailable(format!("creating topic {topic}: {error}"))
        })?;
        for result in results {
            if let Err((name, code)) = result {
                return Err(VersionError::Failed(format!(
                    "creating topic {name}: {code}"
                )));
            }
        }
        let client: BaseConsumer =
            rapport_common::kafka::client_config(&self.config.kafka, "rapport-identity-admin")
                .create()
                .map_err(|error| VersionError::Unavailable(error.to_string()))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let visible = client
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .ok()
                .and_then(|metadata| {
                    metadata
                        .topics()
                        .first()
                        .map(|entry| entry.partitions().len() as i32 == partitions)
                })
                .unwrap_or(false);
            if visible {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                let _ = self.delete_topic(topic);
                return Err(VersionError::Failed(format!(
                    "topic {topic} was created but did not show {partitions} partitions within 30 s"
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn delete_topic(&self, topic: &str) -> Result<(), VersionError> {
        let admin = self.admin_client()?;
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = block_on(admin.delete_topics(&[topic], &options)).map_err(|error| {
            VersionError::Unavailable(format!("deleting topic {topic}: {error}"))
        })?;
        for result in results {
            if let Err((name, code)) = result {
                return Err(VersionError::Failed(format!(
                    "deleting topic {name}: {code}"
                )));
            }
        }
        Ok(())
    }
}

struct TopicLayout {
    raw_partitions: i32,
    customer_partitions: i32,
    replication: i32,
    version_topic_exists: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rapport_projections::identity::{Identifier, IdentifierKind};

    #[test]
    fn baselines_live_beside_the_data_directory() {
        assert_eq!(
            baselines_dir(Path::new("data/identity")),
            PathBuf::from("data/identity.baselines")
        );
    }

    #[test]
    fn names_are_checked_before_anything_is_created() {
        assert!(valid_name("r-2_b").is_ok());
        for bad in ["", "a b", "x/y", "v.2", &"n".repeat(65)] {
            assert!(
                matches!(valid_name(bad), Err(VersionError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    /// A graph frozen in a checkpoint compared with a version in the live
    /// database, on real RocksDB: equal while they hold the same entries,
    /// and the differing key is named once one differs.
    #[test]
    fn a_version_that_differs_from_its_baseline_names_the_key() {
        let directory = tempfile::tempdir().unwrap();
        let store = Store::open(&directory.path().join("identity"), &[FAMILY]).unwrap();
        let version_family = family_of("r2");
        store.create_family(&version_family).unwrap();
        let email = Identifier::new(IdentifierKind::Email, "a@b.com");
        for family in [FAMILY, version_family.as_str()] {
            let mut staged = store.stage(family);
            staged.put(keys::offset(0), 4i64.to_be_bytes().to_vec());
            staged.put(keys::graph_node("c-1"), b"node".to_vec());
            staged.put(keys::identifier(&email), b"c-1".to_vec());
            staged.put(keys::seen_event("e-1"), Vec::new());
            staged.commit().unwrap();
        }
        let baseline = directory.path().join("baseline");
        store.checkpoint(&baseline).unwrap();
        // The live graph goes on after the checkpoint; the baseline does not.
        let mut staged = store.stage(FAMILY);
        staged.put(keys::offset(0), 9i64.to_be_bytes().to_vec());
        staged.put(keys::seen_event("e-2"), Vec::new());
        staged.commit().unwrap();

        let frozen = Store::open_read_only(&baseline).unwrap();
        let compare = |store: &Store| {
            crate::compare::compare(
                frozen.entries_from(FAMILY, &[]).unwrap(),
                store.entries_from(&version_family, &[]).unwrap(),
            )
            .unwrap()
        };
        let same = compare(&store);
        assert!(same.equal, "{same:?}");
        assert_eq!(same.left.checksum, same.right.checksum);

        let mut staged = store.stage(&version_family);
        staged.put(keys::identifier(&email), b"prospect-1".to_vec());
        staged.commit().unwrap();
        let different = compare(&store);
        assert!(!different.equal);
        assert_ne!(different.left.checksum, different.right.checksum);
        assert_eq!(
            different.first_differences[0].key,
            "identifier email:a@b.com"
        );
    }
}
