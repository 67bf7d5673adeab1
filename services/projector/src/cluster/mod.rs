//! The projector processes of one deployment. Each owns some partitions of
//! the customer topic (`projector.partitions`), announces itself on the
//! compacted projectors topic every [`ANNOUNCE_EVERY`] with a lease of
//! [`LEASE_MS`], and folds everyone's announcements into routes: for each
//! partition, the process whose store holds it ([`ownership`]). Reads of a
//! person follow the routes (`read`), so any process's query API answers
//! for the whole person; a process that cannot be asked within
//! [`PEER_BUDGET`] makes the read fail with a 503 naming its partitions,
//! never a partial answer.
//!
//! A process that owns every partition and finds no projectors topic runs
//! alone, as a single projector always did.

pub mod ownership;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use prost::Message as _;
use rapport_common::config::{AuthMode, Config};
use rapport_common::follow::Follower;
use rapport_common::kafka::{Outgoing, assigning_consumer, produce_all};
use rapport_common::metrics::{Counter, Gauge, Histogram, Registry};
use rapport_common::{Error, Result};
use rapport_proto::internal::{ReadAnswer, ReadRequest};
use rapport_proto::v1::ProjectorAnnounced;

use crate::versions::Versions;
use ownership::{Announcements, Route, Routes};

/// How often a process renews its announcement.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(2);
/// How often a process looks whether what it serves changed.
const LOOK_EVERY: Duration = Duration::from_millis(200);
/// How long an announcement holds without a newer one. Compared with the
/// reader's clock, so the processes' clocks must agree to well within it
/// (NTP does).
pub const LEASE_MS: i64 = 10_000;
/// How long a read waits for another process before it answers 503.
pub const PEER_BUDGET: Duration = Duration::from_secs(1);
/// How long a population figure waits for another process's part: its
/// share or segment counts may need a pass over everyone it holds.
pub const POPULATION_BUDGET: Duration = Duration::from_secs(30);
/// The path other processes read through.
pub const READS_PATH: &str = "/v1/internal/reads";
/// How long start-up waits for the projectors topic and its first full read.
const LOAD_PATIENCE: Duration = Duration::from_secs(60);

/// What this process knows of the others, and how it asks them.
pub struct Cluster {
    /// This process's announcement, its serving partitions kept current.
    mine: Mutex<ProjectorAnnounced>,
    /// Owned partitions being given up: no longer announced as served, so
    /// that reads go to their other owner before this one stops applying
    /// them.
    releasing: Mutex<std::collections::BTreeSet<i32>>,
    /// Everyone's, as the topic said.
    announcements: RwLock<Announcements>,
    routes: RwLock<Arc<Routes>>,
    agent: ureq::Agent,
    authorization: Option<String>,
    metrics: ClusterMetrics,
    /// The last problem logged, so that a problem is logged when it starts
    /// and when it changes, not on every renewal.
    said: Mutex<String>,
    /// Where announcements go; unset while alone.
    outlet: std::sync::OnceLock<Outlet>,
}

struct Outlet {
    producer: rdkafka::producer::FutureProducer<rapport_common::kafka::HealthContext>,
    topic: String,
    /// Set once the process said it stops: no renewal may follow. Held
    /// while a record is written, so none can overtake the last word.
    left: Mutex<bool>,
}

struct ClusterMetrics {
    unowned: Gauge,
    catching_up: Gauge,
    overlapping: Gauge,
    projectors: Gauge,
    asked: Counter,
    failed: Counter,
    seconds: Histogram,
}

impl ClusterMetrics {
    fn new(registry: &Registry) -> Self {
        let partitions = |name, help| registry.gauge(name, help, &[]);
        Self {
            unowned: partitions(
                "rapport_projector_partitions_unowned",
                "Customer-topic partitions no projector owns: reads touching them answer 503",
            ),
            catching_up: partitions(
                "rapport_projector_partitions_catching_up",
                "Customer-topic partitions owned only by projectors that have not read them to their end",
            ),
            overlapping: partitions(
                "rapport_projector_partitions_overlapping",
                "Customer-topic partitions owned by more than one projector",
            ),
            projectors: partitions(
                "rapport_projector_peers",
                "Projector processes whose announcement holds, this one included",
            ),
            asked: registry.counter(
                "rapport_projector_peer_reads_total",
                "Reads sent to other projector processes",
                &[],
            ),
            failed: registry.counter(
                "rapport_projector_peer_read_failures_total",
                "Reads other projector processes did not answer in time or refused",
                &[],
            ),
            seconds: registry.histogram(
                "rapport_projector_peer_read_seconds",
                "Time to get an answer from another projector process",
                rapport_common::metrics::seconds_buckets,
                &[],
            ),
        }
    }
}

impl Cluster {
    /// A cluster of this process alone, owning `owned` of `count`
    /// partitions, until announcements are folded in.
    pub fn new(
        mine: ProjectorAnnounced,
        service_key: Option<String>,
        registry: &Registry,
    ) -> Arc<Self> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(PEER_BUDGET))
            .build()
            .into();
        let cluster = Arc::new(Self {
            mine: Mutex::new(mine),
            releasing: Mutex::default(),
            announcements: RwLock::default(),
            routes: RwLock::default(),
            agent,
            authorization: service_key.map(|key| format!("Bearer {key}")),
            metrics: ClusterMetrics::new(registry),
            said: Mutex::default(),
            outlet: std::sync::OnceLock::new(),
        });
        cluster.reroute(rapport_common::now_ms());
        cluster
    }

    /// Folds the projectors topic on a thread of its own; alone when the
    /// topic does not exist and this process owns every partition.
    /// Blocking: call it before the workers start, so that the query API
    /// is up as soon as they are; then [`Cluster::announce_from`].
    pub fn start(config: &Config, registry: &Registry) -> Result<Arc<Self>> {
        let topic = &config.topics.projectors;
        let (consumer, _) = assigning_consumer(&config.kafka, "rapport-projector-peers", true)?;
        let count = rapport_common::kafka::wait_for_partitions(
            &consumer,
            &config.topics.customer,
            LOAD_PATIENCE,
        )?;
        let owned: Vec<i32> = if config.projector.partitions.is_empty() {
            (0..count).collect()
        } else {
            config.projector.partitions.clone()
        };
        let url = config
            .projector
            .url
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.projector.listen))
            .trim_end_matches('/')
            .to_owned();
        let mine = ProjectorAnnounced {
            url: url.clone(),
            owned: owned.clone(),
            serving: Vec::new(),
            partition_count: count,
            customer_topic: config.topics.customer.clone(),
            live_version: String::new(),
            started_at_ms: rapport_common::now_ms(),
            announced_at_ms: 0,
            lease_ms: LEASE_MS,
        };
        let service_key = std::env::var("RAPPORT_SERVICE_KEY")
            .ok()
            .filter(|key| !key.trim().is_empty())
            .or_else(|| Some(config.privacy.service_key.clone()))
            .map(|key| key.trim().to_owned())
            .filter(|key| !key.is_empty());
        if service_key.is_none() && config.auth == AuthMode::Keys {
            tracing::warn!(
                "no service key (RAPPORT_SERVICE_KEY): this projector cannot read people's profiles held by other projectors"
            );
        }
        let cluster = Self::new(mine, service_key, registry);
        match rapport_common::kafka::partition_count(&consumer, topic, Duration::from_secs(5)) {
            Ok(_) => {}
            Err(Error::MissingTopic(_)) if owned.len() as i32 == count => {
                tracing::info!(
                    topic,
                    "no projectors topic: this projector owns every partition and runs alone"
                );
                return Ok(cluster);
            }
            Err(Error::MissingTopic(_)) => {
                return Err(Error::Config(format!(
                    "topic {topic} does not exist; a projector owning some partitions ({owned:?} of {count}) needs it to find the others: create it with `rapportctl topics create`"
                )));
            }
            Err(error) => return Err(error),
        }
        let producer = rapport_common::kafka::state_producer(
            &config.kafka,
            "rapport-projector-peers",
            Duration::from_secs(10),
        )?;
        let _ = cluster.outlet.set(Outlet {
            producer,
            topic: topic.clone(),
            left: Mutex::new(false),
        });
        let folding = cluster.clone();
        let mut follower = Follower::new(
            &config.kafka,
            "rapport-projector-peers",
            topic,
            LOAD_PATIENCE,
            move |key: &[u8], payload: &[u8]| {
                let folded = folding.fold(key, payload);
                folding.reroute(rapport_common::now_ms());
                folded
            },
        )?;
        // Read the topic to its end, so that the first request is routed
        // with everyone known.
        follower.load(LOAD_PATIENCE)?;
        cluster.reroute(rapport_common::now_ms());
        let report = cluster.routes().report.clone();
        tracing::info!(topic, url, owned = ?owned, projectors = report.projectors.len(), unowned = ?report.unowned, "projectors topic loaded");
        // Leases lapse without records: the routes are worked out again
        // after every wait.
        let lapsing = cluster.clone();
        follower.follow_on_thread("peers", move || {
            lapsing.reroute(rapport_common::now_ms());
        })?;
        Ok(cluster)
    }

    /// Announces this process now, every [`ANNOUNCE_EVERY`] after and
    /// whenever what it serves changes, on a thread of its own, with the
    /// partitions `versions`' live worker has read to their end, until
    /// [`Cluster::leave`].
    pub fn announce_from(self: &Arc<Self>, versions: Arc<Versions>) -> Result<()> {
        let announcing = self.clone();
        spawn("announce", move || {
            let mut last_announced: Option<(Instant, Vec<i32>, String)> = None;
            loop {
                let (serving, live) = announcing.refresh_mine(&versions);
                // Renew when the lease asks for it, and at once when what
                // this process serves changed, so that the others route to
                // it as soon as it has caught up.
                let due = last_announced.as_ref().is_none_or(|(at, said, said_live)| {
                    at.elapsed() >= ANNOUNCE_EVERY || *said != serving || *said_live != live
                });
                if due {
                    match announcing.announce() {
                        Ok(false) => break,
                        Ok(true) => last_announced = Some((Instant::now(), serving, live)),
                        Err(error) => {
                            tracing::warn!(%error, "could not renew this projector's announcement");
                        }
                    }
                }
                std::thread::sleep(LOOK_EVERY);
            }
        })
    }

    /// Takes the partitions the live worker has read to their end, and the
    /// live version, into this process's announcement and its own routes.
    fn refresh_mine(&self, versions: &Versions) -> (Vec<i32>, String) {
        let reached = versions.live_ends_reached();
        let live = versions.live();
        let releasing = lock(&self.releasing).clone();
        let serving: Vec<i32> = {
            let mut mine = lock(&self.mine);
            mine.serving = mine
                .owned
                .iter()
                .copied()
                .filter(|partition| reached.contains(partition) && !releasing.contains(partition))
                .collect();
            mine.live_version = live.clone();
            mine.serving.clone()
        };
        self.reroute(rapport_common::now_ms());
        (serving, live)
    }

    /// Writes this process's announcement; false once the process said it
    /// stops.
    fn announce(&self) -> Result<bool> {
        let Some(outlet) = self.outlet.get() else {
            return Ok(true);
        };
        let announced = {
            let mut mine = lock(&self.mine);
            mine.announced_at_ms = rapport_common::now_ms();
            mine.clone()
        };
        let left = lock(&outlet.left);
        if *left {
            return Ok(false);
        }
        produce_all(&outlet.producer, &[record(&outlet.topic, &announced)])?;
        Ok(true)
    }

    /// Announces that this process stops (it owns nothing from now on), so
    /// the others route around it at once rather than when its lease ends.
    /// Call it once it no longer answers requests. Blocking.
    pub fn leave(&self) {
        let Some(outlet) = self.outlet.get() else {
            return;
        };
        let mut left = lock(&outlet.left);
        *left = true;
        let mut leaving = lock(&self.mine).clone();
        leaving.owned.clear();
        leaving.serving.clear();
        leaving.announced_at_ms = rapport_common::now_ms();
        match produce_all(&outlet.producer, &[record(&outlet.topic, &leaving)]) {
            Ok(()) => tracing::info!(topic = %outlet.topic, "announced that this projector stops"),
            Err(error) => {
                tracing::warn!(topic = %outlet.topic, %error, "could not announce that this projector stops; its lease ends on its own")
            }
        }
    }

    /// Folds one record of the projectors topic.
    pub fn fold(&self, key: &[u8], payload: &[u8]) -> std::result::Result<(), String> {
        self.announcements
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .apply(key, payload)
    }

    /// Works the routes out again as of `now_ms`, and says what changed
    /// for the worse.
    pub fn reroute(&self, now_ms: i64) {
        let mine = lock(&self.mine).clone();
        let routes = self
            .announcements
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .ownership(&mine, now_ms);
        let report = &routes.report;
        self.metrics.unowned.set(report.unowned.len() as i64);
        self.metrics
            .catching_up
            .set(report.catching_up.len() as i64);
        self.metrics
            .overlapping
            .set(report.overlapping.len() as i64);
        self.metrics.projectors.set(report.projectors.len() as i64);
        let problem = if report.unowned.is_empty()
            && report.catching_up.is_empty()
            && report.overlapping.is_empty()
        {
            String::new()
        } else {
            format!(
                "unowned {:?}, catching up {:?}, overlapping {:?}",
                report.unowned, report.catching_up, report.overlapping
            )
        };
        {
            let mut said = lock(&self.said);
            if *said != problem {
                if problem.is_empty() {
                    tracing::info!(
                        projectors = report.projectors.len(),
                        "every partition of the customer topic is served by exactly one projector"
                    );
                } else {
                    tracing::warn!(unowned = ?report.unowned, catching_up = ?report.catching_up, overlapping = ?report.overlapping, "the customer topic's partitions are not each served by exactly one projector; reads touching unowned or catching-up partitions answer 503");
                }
                *said = problem;
            }
        }
        *self
            .routes
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(routes);
    }

    /// The routes as last worked out.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Whether every partition is read here: no read leaves the process.
    pub fn all_local(&self) -> bool {
        self.routes().all_local()
    }

    /// The partition of the customer topic holding the profile `id`.
    pub fn partition_of(&self, id: &str) -> i32 {
        let count = self.routes().partition_count().max(1);
        rapport_common::partitioning::partition_of(id.as_bytes(), count)
    }

    /// The partitions this process owns.
    pub fn owned(&self) -> Vec<i32> {
        lock(&self.mine).owned.clone()
    }

    /// Stops announcing `partitions` as served (they are being given up);
    /// the others route their reads elsewhere within [`LOOK_EVERY`] and
    /// their own reading of the topic.
    pub fn release(&self, partitions: &[i32]) {
        lock(&self.releasing).extend(partitions.iter().copied());
    }

    /// Owns `owned` from now on (the workers apply them).
    pub fn set_owned(&self, owned: Vec<i32>) {
        lock(&self.releasing).retain(|partition| owned.contains(partition));
        lock(&self.mine).owned = owned;
        self.reroute(rapport_common::now_ms());
    }

    /// Whether this process owns `partition` (applies it), so may answer
    /// reads of it.
    pub fn owns(&self, partition: i32) -> bool {
        lock(&self.mine).owned.contains(&partition)
    }

    /// Sends `request` to the process at `url`, within [`PEER_BUDGET`].
    /// Blocking.
    pub fn ask(&self, url: &str, request: &ReadRequest) -> Result<ReadAnswer> {
        let started = Instant::now();
        self.metrics.asked.increment(1);
        let answer = self.ask_once(url, request);
        self.metrics
            .seconds
            .observe(started.elapsed().as_secs_f64());
        if answer.is_err() {
            self.metrics.failed.increment(1);
        }
        answer.map_err(|why| {
            Error::Unavailable(format!(
                "partitions {:?} are served by {url}, which {why}; ask again once it is back (see /v1/admin/status)",
                request.partitions
            ))
        })
    }

    fn ask_once(
        &self,
        url: &str,
        request: &ReadRequest,
    ) -> std::result::Result<ReadAnswer, String> {
        let budget = if request.share.is_some()
            || request.segments.is_some()
            || !request.figure.is_empty()
        {
            POPULATION_BUDGET
        } else {
            PEER_BUDGET
        };
        let mut call = self
            .agent
            .post(format!("{url}{READS_PATH}"))
            .header("content-type", "application/x-protobuf")
            .config()
            .timeout_global(Some(budget))
            .build();
        if let Some(authorization) = &self.authorization {
            call = call.header("authorization", authorization);
        }
        let mut response = call
            .send(request.encode_to_vec())
            .map_err(|error| format!("did not answer within {budget:?} ({error})"))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_vec()
            .map_err(|error| format!("broke off its answer ({error})"))?;
        if status != 200 {
            let text = String::from_utf8_lossy(&body);
            return Err(format!("answered {status}: {}", text.trim()));
        }
        ReadAnswer::decode(body.as_slice())
            .map_err(|error| format!("sent an answer that does not decode ({error})"))
    }
}

/// The record announcing `announced`.
fn record(topic: &str, announced: &ProjectorAnnounced) -> Outgoing {
    Outgoing {
        topic: topic.to_owned(),
        key: announced.url.as_bytes().to_vec(),
        payload: announced.encode_to_vec(),
        timestamp_ms: None,
        headers: Vec::new(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn spawn(name: &str, work: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(work)
        .map(|_| ())
        .map_err(|source| Error::Io {
            context: format!("starting the {name} thread"),
            source,
        })
}

/// The partitions each other process serves, by URL: where reads that
/// could be on any partition (the identifier index) go.
pub fn servers(routes: &Routes) -> BTreeMap<String, Vec<i32>> {
    let mut servers: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for partition in 0..routes.partition_count() {
        if let Route::Remote(url) = routes.route(partition) {
            servers.entry(url.clone()).or_default().push(partition);
        }
    }
    servers
}
