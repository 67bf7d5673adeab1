//! Versions of a projection. Each version is its own column family with its
//! own worker, positions and offsets; "live" is only a pointer, so a rebuild
//! runs beside the live version and a switch is one write.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use rapport_common::admin::ProjectionVersion;
use rapport_common::config::Config;
use rapport_common::metrics::Registry;
use rapport_common::status::WorkerStatus;
use rapport_common::store::Store;
use rapport_common::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::apply::{ApplyMetrics, WorkerLinks, run};
use crate::changes::Changes;
use crate::position::{Bounds, StartFrom};

/// Where version specs and the live pointer are kept.
pub const META: &str = "projector.meta";
const LIVE_KEY: &[u8] = b"L";
/// The partitions this process owns, once an operator moved some
/// (`PUT /v1/admin/partitions`): they outlive a restart, and win over the
/// configured ones.
const OWNED_KEY: &[u8] = b"P";
const SPEC_TAG: u8 = b'V';

/// The projection the projector serves; versions are `customer_view.<name>`.
pub const PROJECTION: &str = "customer_view";
/// The version every new installation starts with.
pub const FIRST_VERSION: &str = "v1";

/// What a version is built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionSpec {
    pub version: String,
    pub from: StartFrom,
    /// A bounded snapshot: only records ingest received at or before this
    /// instant; the version stops there and never follows the head.
    pub until_ms: Option<i64>,
    /// The topic it reads when not the configured customer topic: the
    /// customer topic of a graph version (`rapportctl reidentify`). It
    /// keeps reading it, also once live.
    pub source_topic: Option<String>,
}

/// A spec as stored before versions could read another topic. postcard
/// does not name fields, so such a spec fails to decode as a
/// [`VersionSpec`] (it ends early) and is read as this instead.
#[derive(Deserialize)]
struct SpecWithoutSourceTopic {
    version: String,
    from: StartFrom,
    until_ms: Option<i64>,
}

fn decode_spec(bytes: &[u8]) -> Result<VersionSpec> {
    postcard::from_bytes::<VersionSpec>(bytes)
        .or_else(|_| {
            postcard::from_bytes::<SpecWithoutSourceTopic>(bytes).map(|old| VersionSpec {
                version: old.version,
                from: old.from,
                until_ms: old.until_ms,
                source_topic: None,
            })
        })
        .map_err(|error| Error::State(error.into()))
}

impl VersionSpec {
    pub fn family(&self) -> String {
        family_of(&self.version)
    }

    /// The topic the version reads.
    pub fn topic<'a>(&'a self, config: &'a Config) -> &'a str {
        self.source_topic
            .as_deref()
            .unwrap_or(&config.topics.customer)
    }
}

pub fn family_of(version: &str) -> String {
    format!("{PROJECTION}.{version}")
}

/// What a worker restarted on other partitions keeps of the one before.
struct Carried {
    changes: Changes,
    ends_reached: BTreeMap<i32, i64>,
    applied: BTreeMap<i32, i64>,
}

struct Worker {
    spec: VersionSpec,
    stop: Arc<AtomicBool>,
    status: Arc<WorkerStatus>,
    finished: Arc<AtomicBool>,
    /// Its worker stopped with an error (the status has the last one).
    failed: Arc<AtomicBool>,
    /// Profiles its batches changed, for the analytics scoreboard.
    changes: Changes,
    thread: Option<JoinHandle<Result<()>>>,
}

/// Runs one worker per version and keeps the live pointer.
pub struct Versions {
    config: Config,
    /// The customer-topic partitions the workers apply; empty for all.
    partitions: RwLock<Vec<i32>>,
    store: Store,
    registry: Registry,
    workers: Mutex<BTreeMap<String, Worker>>,
    live: RwLock<String>,
}

fn spec_key(version: &str) -> Vec<u8> {
    let mut key = vec![SPEC_TAG];
    key.extend_from_slice(version.as_bytes());
    key
}

fn valid_name(version: &str) -> bool {
    !version.is_empty()
        && version.len() <= 64
        && version
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

impl Versions {
    /// Loads the versions from the store (creating the first one on a new
    /// installation) and starts a worker for each.
    pub fn start(config: Config, store: Store, registry: Registry) -> Result<Arc<Self>> {
        store.create_family(META)?;
        let mut specs = Vec::new();
        for (_, value) in store.scan_prefix(META, &[SPEC_TAG], usize::MAX)? {
            specs.push(decode_spec(&value)?);
        }
        if specs.is_empty() {
            let first = VersionSpec {
                version: FIRST_VERSION.to_owned(),
                from: StartFrom::Beginning,
                until_ms: None,
                source_topic: None,
            };
            let mut staged = store.stage(META);
            staged.put(
                spec_key(FIRST_VERSION),
                postcard::to_stdvec(&first).expect("specs serialise"),
            );
            staged.put(LIVE_KEY.to_vec(), FIRST_VERSION.as_bytes().to_vec());
            staged.commit()?;
            specs.push(first);
        }
        let live = match store.get(META, LIVE_KEY)? {
            Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            None => FIRST_VERSION.to_owned(),
        };
        let versions = Arc::new(Self {
            partitions: RwLock::new(config.projector.partitions.clone()),
            config,
            store,
            registry,
            workers: Mutex::new(BTreeMap::new()),
            live: RwLock::new(live),
        });
        for spec in specs {
            versions.spawn(spec)?;
        }
        Ok(versions)
    }

    /// The partitions an operator set last (see [`Versions::set_partitions`]),
    /// if any: they win over the configured ones.
    pub fn stored_partitions(store: &Store) -> Result<Option<Vec<i32>>> {
        store.create_family(META)?;
        match store.get(META, OWNED_KEY)? {
            None => Ok(None),
            Some(bytes) => postcard::from_bytes(&bytes).map(Some).map_err(|error| {
                Error::Config(format!(
                    "the owned partitions stored in {META} do not decode: {error}"
                ))
            }),
        }
    }

    fn spawn(&self, spec: VersionSpec) -> Result<()> {
        self.spawn_after(spec, None)
    }

    /// Starts the worker of `spec`; with `before`, in place of a worker
    /// that stopped, keeping its change feed (the scoreboard's view stays
    /// valid) and the ends it had reached of partitions still owned.
    fn spawn_after(&self, spec: VersionSpec, before: Option<Carried>) -> Result<()> {
        let family = spec.family();
        self.store.create_family(&family)?;
        let stop = Arc::new(AtomicBool::new(false));
        let finished = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicBool::new(false));
        // The worker reads, and names in dead letters, the version's topic.
        let mut config = self.config.clone();
        config.topics.customer = spec.topic(&self.config).to_owned();
        config.projector.partitions = self.partitions.read().expect("partitions lock").clone();
        let status = WorkerStatus::new(&config.topics.customer);
        if let Some(before) = &before {
            let owned = &config.projector.partitions;
            status.record_batch(&before.applied, 0);
            for (partition, next) in &before.ends_reached {
                if owned.is_empty() || owned.contains(partition) {
                    status.record_end_reached_at(*partition, *next);
                }
            }
        }
        let metrics = ApplyMetrics::new(&self.registry, &family);
        let bounds = Bounds {
            from: spec.from.clone(),
            until_ms: spec.until_ms,
        };
        let changes = before.map_or_else(Changes::default, |before| before.changes);
        let thread = {
            let links = WorkerLinks {
                stop: stop.clone(),
                status: status.clone(),
                changes: changes.clone(),
            };
            let (store, finished, failed) = (self.store.clone(), finished.clone(), failed.clone());
            rapport_common::worker::spawn(
                format!("apply-{}", spec.version),
                status.clone(),
                move || run(&config, &store, &family, metrics, &bounds, &links),
                move |outcome| {
                    failed.store(outcome.is_err(), Ordering::Relaxed);
                    finished.store(true, Ordering::Relaxed);
                },
            )?
        };
        self.workers.lock().expect("versions lock").insert(
            spec.version.clone(),
            Worker {
                spec,
                stop,
                status,
                finished,
                failed,
                changes,
                thread: Some(thread),
            },
        );
        Ok(())
    }

    /// Owns `partitions` of the customer topic from now on, and after a
    /// restart: stores them, then restarts every version's worker on them,
    /// one at a time. A partition taken on is applied from its stored
    /// offset (from its beginning, the first time); one given up stays in
    /// the store as it stood, and is not read again.
    pub fn set_partitions(&self, partitions: Vec<i32>) -> Result<()> {
        let mut staged = self.store.stage(META);
        staged.put(
            OWNED_KEY.to_vec(),
            postcard::to_stdvec(&partitions).expect("partitions serialise"),
        );
        staged.commit()?;
        *self.partitions.write().expect("partitions lock") = partitions.clone();
        for name in self.worker_names() {
            let thread = {
                let mut workers = self.workers.lock().expect("versions lock");
                let Some(worker) = workers.get_mut(&name) else {
                    continue;
                };
                // A bounded version that reached its end stays as it is.
                if worker.spec.until_ms.is_some() && worker.finished.load(Ordering::Relaxed) {
                    continue;
                }
                worker.stop.store(true, Ordering::Relaxed);
                worker.thread.take()
            };
            if let Some(thread) = thread {
                let _ = thread.join();
            }
            // The stopped worker stays listed (with the ends it reached)
            // until its successor takes its place.
            let carried = {
                let workers = self.workers.lock().expect("versions lock");
                workers.get(&name).map(|worker| {
                    (
                        worker.spec.clone(),
                        Carried {
                            changes: worker.changes.clone(),
                            ends_reached: worker.status.ends_reached_at(),
                            applied: worker.status.applied(),
                        },
                    )
                })
            };
            if let Some((spec, carried)) = carried {
                self.spawn_after(spec, Some(carried))?;
            }
        }
        tracing::info!(partitions = ?partitions, "owning these partitions of the customer topic from now on");
        Ok(())
    }

    /// The partitions the workers apply; empty for every one.
    pub fn partitions(&self) -> Vec<i32> {
        self.partitions.read().expect("partitions lock").clone()
    }

    /// Starts building a new version beside the live one, from the
    /// configured customer topic or from `source_topic`.
    pub fn create(
        &self,
        version: Option<String>,
        from: StartFrom,
        until_ms: Option<i64>,
        source_topic: Option<String>,
    ) -> crate::Result<VersionSpec> {
        let version = {
            let workers = self.workers.lock().expect("versions lock");
            let version = version.unwrap_or_else(|| {
                (1..)
                    .map(|number| format!("v{number}"))
                    .find(|name| !workers.contains_key(name))
                    .expect("a free name")
            });
            if workers.contains_key(&version) {
                return Err(crate::Error::Conflict(format!(
                    "version {version} already exists; drop it first"
                )));
            }
            version
        };
        if !valid_name(&version) {
            return Err(crate::Error::refused(
                "version",
                format!("version name {version:?} must be 1-64 letters, digits, - or _"),
            ));
        }
        if let Some(until) = until_ms
            && until > rapport_common::now_ms()
        {
            return Err(crate::Error::refused(
                "until",
                "until must not lie in the future: a bounded snapshot ends at a time already received",
            ));
        }
        // The configured topic named explicitly is no other topic.
        let source_topic = source_topic.filter(|topic| *topic != self.config.topics.customer);
        if let Some(topic) = &source_topic {
            self.check_source_topic(topic)?;
        }
        let spec = VersionSpec {
            version,
            from,
            until_ms,
            source_topic,
        };
        let mut staged = self.store.stage(META);
        staged.put(
            spec_key(&spec.version),
            postcard::to_stdvec(&spec).expect("specs serialise"),
        );
        staged.commit()?;
        self.spawn(spec.clone())?;
        tracing::info!(version = %spec.version, from = ?spec.from, until_ms = ?spec.until_ms, topic = spec.topic(&self.config), "rebuild started");
        Ok(spec)
    }

    /// Refuses a source topic that does not exist or lacks a partition
    /// this projector owns.
    fn check_source_topic(&self, topic: &str) -> crate::Result<()> {
        use rdkafka::consumer::BaseConsumer;
        let unavailable = |error: String| {
            crate::Error::Unavailable(format!(
                "could not read the cluster's topics to check source_topic: {error}"
            ))
        };
        let client: BaseConsumer =
            rapport_common::kafka::client_config(&self.config.kafka, "rapport-projector-admin")
                .create()
                .map_err(|error| unavailable(error.to_string()))?;
        let partitions = match rapport_common::kafka::partition_count(
            &client,
            topic,
            std::time::Duration::from_secs(10),
        ) {
            Ok(partitions) => partitions,
            Err(Error::MissingTopic(_)) => {
                return Err(crate::Error::refused(
                    "source_topic",
                    format!("topic {topic} does not exist"),
                ));
            }
            Err(error) => return Err(unavailable(error.to_string())),
        };
        let missing: Vec<i32> = self
            .config
            .projector
            .partitions
            .iter()
            .copied()
            .filter(|partition| *partition >= partitions)
            .collect();
        if !missing.is_empty() {
            return Err(crate::Error::refused(
                "source_topic",
                format!(
                    "topic {topic} has {partitions} partitions; this projector owns {missing:?} too"
                ),
            ));
        }
        Ok(())
    }

    /// Makes `version` the one queries read by default. A version that
    /// reads another topic than the configured customer topic keeps reading
    /// it once live, so that takes `follow_other_topic`.
    pub fn switch(&self, version: &str, follow_other_topic: bool) -> crate::Result<()> {
        let workers = self.workers.lock().expect("versions lock");
        let worker = workers
            .get(version)
            .ok_or_else(|| crate::Error::NotFound(format!("no version {version}")))?;
        if worker.spec.until_ms.is_some() {
            return Err(crate::Error::refused(
                "version",
                format!(
                    "version {version} is a bounded snapshot; it can be queried with ?version= but not made live"
                ),
            ));
        }
        if let Some(topic) = &worker.spec.source_topic
            && !follow_other_topic
        {
            return Err(crate::Error::refused(
                "follow_other_topic",
                format!(
                    "version {version} reads {topic}, not the customer topic {}; once live it keeps reading {topic} and sees only what is written there (a re-identification's topic stops at its bounds); switch with follow_other_topic=true (`rapportctl switch --follow-other-topic`) if that is meant",
                    self.config.topics.customer
                ),
            ));
        }
        let mut staged = self.store.stage(META);
        staged.put(LIVE_KEY.to_vec(), version.as_bytes().to_vec());
        staged.commit()?;
        *self.live.write().expect("live lock") = version.to_owned();
        tracing::info!(version, "switched the live version");
        Ok(())
    }

    /// Stops a version's worker and deletes its state. The live version
    /// cannot be dropped.
    pub fn drop_version(&self, version: &str) -> crate::Result<()> {
        if *self.live.read().expect("live lock") == version {
            return Err(crate::Error::Conflict(format!(
                "version {version} is live; switch to another version first"
            )));
        }
        let mut worker = self
            .workers
            .lock()
            .expect("versions lock")
            .remove(version)
            .ok_or_else(|| crate::Error::NotFound(format!("no version {version}")))?;
        worker.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = worker.thread.take() {
            let _ = thread.join();
        }
        let mut staged = self.store.stage(META);
        staged.delete(spec_key(version));
        staged.commit()?;
        self.store.drop_family(&worker.spec.family())?;
        tracing::info!(version, "dropped a version");
        Ok(())
    }

    pub fn live(&self) -> String {
        self.live.read().expect("live lock").clone()
    }

    /// The column family a query reads: the named version, or the live one.
    pub fn family_for(&self, version: Option<&str>) -> crate::Result<String> {
        match version {
            None => Ok(family_of(&self.live())),
            Some(name)
                if self
                    .workers
                    .lock()
                    .expect("versions lock")
                    .contains_key(name) =>
            {
                Ok(family_of(name))
            }
            Some(name) => Err(crate::Error::NotFound(format!("no version {name}"))),
        }
    }

    /// The versions with a worker.
    fn worker_names(&self) -> Vec<String> {
        self.workers
            .lock()
            .expect("versions lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Every version served here: the live one and those with a worker.
    pub fn names(&self) -> Vec<String> {
        let mut names = self.worker_names();
        names.push(self.live());
        names.sort();
        names.dedup();
        names
    }

    /// The partitions the live version's worker has read to their end
    /// since it started, and applied up to it; none without a worker.
    pub fn live_ends_reached(&self) -> std::collections::BTreeSet<i32> {
        let live = self.live();
        let workers = self.workers.lock().expect("versions lock");
        workers
            .get(&live)
            .map(|worker| worker.status.ends_applied())
            .unwrap_or_default()
    }

    /// The change feed of a version's worker; `None` for a version without
    /// a worker here.
    pub fn changes_of(&self, version: &str) -> Option<Changes> {
        let workers = self.workers.lock().expect("versions lock");
        workers.get(version).map(|worker| worker.changes.clone())
    }

    pub fn reports(&self) -> Vec<ProjectionVersion> {
        let live = self.live();
        let workers = self.workers.lock().expect("versions lock");
        workers
            .values()
            .map(|worker| ProjectionVersion {
                projection: PROJECTION.to_owned(),
                version: worker.spec.version.clone(),
                live: worker.spec.version == live,
                from: worker.spec.from.clone(),
                topic: worker.spec.topic(&self.config).to_owned(),
                until: worker
                    .spec
                    .until_ms
                    .map(rapport_projections::time::format_rfc3339),
                finished: worker.finished.load(Ordering::Relaxed),
                failed: worker.failed.load(Ordering::Relaxed),
                state_bytes: self.store.size_on_disk(&worker.spec.family()),
                compaction_pending_bytes: self
                    .store
                    .pending_compaction_bytes(&worker.spec.family()),
                consumer: worker.status.report(),
            })
            .collect()
    }

    /// A worker that stopped with an error, if any (it ends the process).
    /// Not one that reads a topic of its own while not live: that topic
    /// goes away with its graph version (`reidentify --drop`), which must
    /// not stop the projector; its error shows in the status.
    pub fn failure(&self) -> Option<String> {
        let live = self.live();
        let workers = self.workers.lock().expect("versions lock");
        workers.values().find_map(|worker| {
            worker
                .status
                .report()
                .last_error
                .map(|error| error.message)
                .filter(|_| {
                    worker.failed.load(Ordering::Relaxed)
                        && worker.spec.until_ms.is_none()
                        && (worker.spec.source_topic.is_none() || worker.spec.version == live)
                })
        })
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

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The topic a version reads, if there is such a version.
    pub fn topic_of(&self, version: &str) -> Option<String> {
        let workers = self.workers.lock().expect("versions lock");
        workers
            .get(version)
            .map(|worker| worker.spec.topic(&self.config).to_owned())
    }

    /// Versions that serve `version` from an existing store, without
    /// workers: for tests and benchmarks of the query API.
    pub fn serving(store: Store, version: &str) -> Arc<Self> {
        Arc::new(Self {
            config: Config::default(),
            partitions: RwLock::default(),
            store,
            registry: Registry::default(),
            workers: Mutex::new(BTreeMap::new()),
            live: RwLock::new(version.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_stored_before_source_topics_still_load() {
        #[derive(Serialize)]
        struct Old {
            version: String,
            from: StartFrom,
            until_ms: Option<i64>,
        }
        let old = postcard::to_stdvec(&Old {
            version: "r2".into(),
            from: StartFrom::Time { at_ms: 42 },
            until_ms: Some(99),
        })
        .unwrap();
        assert_eq!(
            decode_spec(&old).unwrap(),
            VersionSpec {
                version: "r2".into(),
                from: StartFrom::Time { at_ms: 42 },
                until_ms: Some(99),
                source_topic: None,
            }
        );
        for source_topic in [None, Some("rapport.events.customer.v1.r2".to_owned())] {
            let spec = VersionSpec {
                version: "v3".into(),
                from: StartFrom::Beginning,
                until_ms: None,
                source_topic,
            };
            assert_eq!(
                decode_spec(&postcard::to_stdvec(&spec).unwrap()).unwrap(),
                spec
            );
        }
    }
}
