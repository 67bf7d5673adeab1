//! `rapport-bench`: throughput and latency of the backbone on this machine,
//! against the broker `make bench` starts. Prints a table; asserts nothing.
//!
//! 1. ingest: events/s through `POST /v1/events` (batches of 500, several
//!    clients) until the broker acknowledged them, next to a plain rdkafka
//!    producer sending the same records with the same settings;
//! 2. rebuild: records/s folding the whole customer topic into RocksDB, by a
//!    fresh projector from an empty store and by `rapportctl replay` beside
//!    the live version, next to a plain rdkafka consumer reading the same
//!    topic with the fetch wait a projector catching up uses (the ratio
//!    says whether a rebuild is bound by the broker), and the same consumer
//!    with the steady wait (tansu holds every fetch answer for the whole
//!    wait; see `kafka::FETCH_WAIT_MS`), the peak resident memory of the
//!    projector while it rebuilds, and the projector's fold and commit fed
//!    the same records from memory (what a rebuild would reach if the
//!    broker cost nothing);
//! 3. query: p50/p99 latency of `GET /v1/customers/{id}` with several clients
//!    while ingest traffic keeps flowing;
//! 4. sealing: the ingest of 1 and the fresh rebuild of 2 again on a second
//!    pipeline with `[privacy] sealing = "off"`, after the first one's and
//!    stopped before the next measure, so that the two never share the
//!    cores: what sealing personal fields costs; beside it, sealing alone
//!    in this process (no vault, no HTTP, no broker).
//! 5. import: rows/s of `rapportctl import orders` reading a generated CSV
//!    of orders and sending it through the same ingest, end to end;
//! 6. the Segment tracking API: events/s of the same workload as Segment
//!    messages through `POST /v1/batch` (batches of 500, the same clients),
//!    beside 1's `POST /v1/events`.
//!
//! Events are generated batch by batch while they are sent, never held all at
//! once, so that 5 million events fit in memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prost::Message as _;
use rapport_e2e::{
    Pipeline, bearer, create_topics, event, get_json, http_agent, metric_sum, test_keys,
};
use serde_json::{Value, json};

/// The projector's allocator, so that the fold fed from memory in this
/// process allocates as it does in the projector's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Events `range` of the synthetic workload (each call mints fresh event ids).
fn generate(range: std::ops::Range<usize>, customers: usize) -> Vec<Value> {
    range
        .map(|index| {
            let person = index % customers;
            let minute = index % 60;
            let when = format!("2026-10-{:02}T08:{minute:02}:00Z", 1 + (index / 60) % 28);
            let who = json!({"customer_id": format!("c-{person}"), "email": format!("p{person}@example.com")});
            match index % 4 {
                0 => event("order.placed", &when, who, json!({"order_id": format!("o-{index}"), "total_minor": 1000 + index % 5000, "currency": "USD"})),
                1 => event("email.opened", &when, who, json!({"message_id": format!("m-{index}")})),
                _ => event("web.page_viewed", &when, who, json!({"url": format!("/p/{}", index % 100)})),
            }
        })
        .collect()
}

/// The events of [`generate`] as Segment messages: orders as `Order
/// Completed`, opened mail as `Email Opened`, views as `page`.
fn generate_segment(range: std::ops::Range<usize>, customers: usize) -> Vec<Value> {
    range
        .map(|index| {
            let person = index % customers;
            let minute = index % 60;
            let when = format!("2026-10-{:02}T08:{minute:02}:00Z", 1 + (index / 60) % 28);
            let mut message = match index % 4 {
                0 => json!({"type": "track", "event": "Order Completed",
                    "properties": {"order_id": format!("so-{index}"), "total": (1000 + index % 5000) as f64 / 100.0, "currency": "USD"}}),
                1 => json!({"type": "track", "event": "Email Opened", "properties": {"email_id": format!("sm-{index}")}}),
                _ => json!({"type": "page", "properties": {"url": format!("/p/{}", index % 100)}}),
            };
            message["messageId"] = json!(format!("bench-{index}"));
            message["userId"] = json!(format!("c-{person}"));
            message["timestamp"] = json!(when);
            message["context"] = json!({"traits": {"email": format!("p{person}@example.com")}});
            message
        })
        .collect()
}

/// Sends messages `0..total` through `POST /v1/batch` in batches of
/// `batch_size` from `clients` clients, the write key as Basic user name;
/// events/s until the broker acknowledged them.
fn segment_over_http(
    pipeline: &Pipeline,
    total: usize,
    customers: usize,
    clients: usize,
    batch_size: usize,
) -> f64 {
    use base64::Engine as _;
    let batch_count = total.div_ceil(batch_size);
    let url = format!("{}/v1/batch", pipeline.ingest_url());
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:", test_keys().write))
    );
    let started = Instant::now();
    std::thread::scope(|scope| {
        for client in 0..clients {
            let (url, basic) = (&url, &basic);
            scope.spawn(move || {
                let agent = http_agent();
                for index in (client..batch_count).step_by(clients) {
                    let batch = generate_segment(
                        index * batch_size..((index + 1) * batch_size).min(total),
                        customers,
                    );
                    let body = serde_json::to_vec(&json!({ "batch": batch })).expect("json");
                    let mut response = agent
                        .post(url)
                        .header("content-type", "application/json")
                        .header("authorization", basic)
                        .send(&body[..])
                        .expect("ingest answers");
                    let status = response.status().as_u16();
                    let text = response.body_mut().read_to_string().unwrap_or_default();
                    assert_eq!(status, 200, "ingest refused a Segment batch: {text}");
                }
            });
        }
    });
    total as f64 / started.elapsed().as_secs_f64()
}

/// What sending the workload through ingest measured.
struct Ingested {
    elapsed: Duration,
    rate: f64,
    /// Request latency, batch sent to broker acknowledgement answered.
    p50: Duration,
    p99: Duration,
    /// Ingest's CPU time per event while it took them in.
    ingest_cpu_us: f64,
    /// The three services' CPU readings before the first batch, for
    /// [`Ingested::services_cpu_us`] once the pipeline caught up.
    services_before: f64,
}

impl Ingested {
    /// Ingest's, identity's and the projector's CPU per event, from the
    /// first batch sent until now (call it once the pipeline caught up).
    fn services_cpu_us(&self, pipeline: &Pipeline, total: usize) -> f64 {
        (services_cpu_seconds(pipeline) - self.services_before) * 1e6 / total as f64
    }
}

/// The CPU time ingest, identity and the projector of `pipeline` used so far.
fn services_cpu_seconds(pipeline: &Pipeline) -> f64 {
    [
        pipeline.ingest.as_ref(),
        Some(&pipeline.identity),
        Some(&pipeline.projector),
    ]
    .into_iter()
    .flatten()
    .filter_map(rapport_e2e::Service::cpu_seconds)
    .sum()
}

/// Sends events `0..total` through `POST /v1/events` of `pipeline` in
/// batches of `batch_size` from `clients` clients, each batch acknowledged
/// by the broker before the client sends its next.
fn ingest_over_http(
    pipeline: &Pipeline,
    total: usize,
    customers: usize,
    clients: usize,
    batch_size: usize,
) -> Ingested {
    let batch_count = total.div_ceil(batch_size);
    let batch = |index: usize| {
        generate(
            index * batch_size..((index + 1) * batch_size).min(total),
            customers,
        )
    };
    let ingest = pipeline.ingest.as_ref().expect("a pipeline with ingest");
    let services_before = services_cpu_seconds(pipeline);
    let ingest_before = ingest.cpu_seconds().unwrap_or(0.0);
    let started = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|client| {
                let batch = &batch;
                scope.spawn(move || {
                    let mut timings = Vec::new();
                    for index in (client..batch_count).step_by(clients) {
                        let events = batch(index);
                        let sent = Instant::now();
                        pipeline.send_ok(&events);
                        timings.push(sent.elapsed());
                    }
                    timings
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("an ingest client"))
            .collect()
    });
    let elapsed = started.elapsed();
    latencies.sort();
    Ingested {
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        elapsed,
        rate: total as f64 / elapsed.as_secs_f64(),
        ingest_cpu_us: (ingest.cpu_seconds().unwrap_or(0.0) - ingest_before) * 1e6 / total as f64,
        services_before,
    }
}

/// The mean size in bytes (key and payload) of `topic`'s records, read
/// whole with a plain consumer.
fn mean_record_bytes(
    kafka: &rapport_common::config::KafkaConfig,
    topic: &str,
    client_id: &str,
) -> f64 {
    let (mut records, mut bytes) = (0u64, 0u64);
    read_whole_topic(kafka, topic, client_id, |message| {
        records += 1;
        bytes += (message.key_len() + message.payload_len()) as u64;
    });
    bytes as f64 / records.max(1) as f64
}

/// The workload's ingest and fresh rebuild on a pipeline of their own, like
/// the sealed pipeline's but with `sealing = "off"`.
struct Clear {
    ingested: Ingested,
    services_cpu_us: f64,
    fresh: FreshRebuild,
    record_bytes: f64,
}

/// Starts a pipeline with sealing off, sends it the same events as the
/// sealed one got, rebuilds its customer view in a fresh projector, and
/// stops it all.
fn measure_clear(total: usize, customers: usize, clients: usize, batch_size: usize) -> Clear {
    let pipeline = Pipeline::start_configured("bench-clear", "[privacy]\nsealing = \"off\"\n");
    let ingested = ingest_over_http(&pipeline, total, customers, clients, batch_size);
    let rebuilt = rebuild_after_ingest(&pipeline, &ingested, total, "rapport-bench-clear-size");
    // Dropping the pipeline kills its services and removes their stores.
    drop(pipeline);
    Clear {
        ingested,
        services_cpu_us: rebuilt.services_cpu_us,
        fresh: rebuilt.fresh,
        record_bytes: rebuilt.record_bytes,
    }
}

/// What follows an ingest run on one pipeline: the services' CPU per event
/// once caught up, a fresh projector's rebuild of the customer view, and
/// the customer records' mean size.
struct AfterIngest {
    services_cpu_us: f64,
    customer_records: i64,
    fresh: FreshRebuild,
    record_bytes: f64,
}

fn rebuild_after_ingest(
    pipeline: &Pipeline,
    ingested: &Ingested,
    total: usize,
    size_group: &str,
) -> AfterIngest {
    pipeline.wait_until_caught_up(Duration::from_secs(3600));
    let services_cpu_us = ingested.services_cpu_us(pipeline, total);
    let customer_records = customer_record_count(pipeline, total);
    let fresh = rebuild_fresh(pipeline, "projector-rebuild", customer_records);
    let record_bytes =
        mean_record_bytes(&rapport_e2e::kafka(), &pipeline.topics.customer, size_group);
    AfterIngest {
        services_cpu_us,
        customer_records,
        fresh,
        record_bytes,
    }
}

/// The records in `pipeline`'s customer topic, which must be one per event
/// sent: the workload merges no profiles, so identity writes one customer
/// record per event, and anything else means events were lost or doubled.
fn customer_record_count(pipeline: &Pipeline, total: usize) -> i64 {
    let customer_records: i64 = rapport_e2e::high_watermarks(&pipeline.topics.customer)
        .values()
        .sum();
    assert_eq!(
        customer_records, total as i64,
        "identity resolved {customer_records} customer records for {total} events"
    );
    customer_records
}

/// What parsing costs ingest per event, in this process: batches of the
/// workload as JSON bytes, parsed, mapped onto protobuf and checked as
/// `POST /v1/events` does.
fn parsing_in_memory(count: usize, customers: usize, batch_size: usize) -> f64 {
    let bodies: Vec<Vec<u8>> = (0..count.div_ceil(batch_size))
        .map(|index| {
            let events = generate(
                index * batch_size..((index + 1) * batch_size).min(count),
                customers,
            );
            serde_json::to_vec(&json!({ "events": events })).expect("json")
        })
        .collect();
    let started = Instant::now();
    let mut checked = 0;
    for body in &bodies {
        #[derive(serde::Deserialize)]
        struct Batch<'a> {
            #[serde(borrow)]
            events: Vec<&'a serde_json::value::RawValue>,
        }
        let batch: Batch<'_> = serde_json::from_slice(body).expect("a batch");
        let mut errors = Vec::new();
        for (index, raw) in batch.events.iter().enumerate() {
            let value: Value = serde_json::from_str(raw.get()).expect("an event");
            let mut event = rapport_ingest::validate::event_from_json(index, &value, &mut errors);
            rapport_ingest::validate::check_event(index, &mut event, &mut errors);
            checked += usize::from(errors.is_empty());
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(checked, count, "every generated event is valid");
    elapsed.as_secs_f64() * 1e6 / count as f64
}

/// What sealing alone costs, per event, in this process: no vault (one
/// data key, as ingest has it cached), no HTTP, no broker.
struct SealingInMemory {
    /// `seal::subject` and `seal::seal_event`, everything ingest does to
    /// seal an event once it has the key.
    seal_us: f64,
    /// Of that, the pseudonyms (HMAC-SHA-256, one per identifier and one
    /// for the subject).
    pseudonyms_us: f64,
    /// Encoding the event for the log, sealed vs clear.
    encode_sealed_us: f64,
    encode_clear_us: f64,
    /// The encoded event's size, sealed vs clear.
    sealed_bytes: f64,
    clear_bytes: f64,
}

/// Seals the workload's first `count` events as ingest does (validated
/// from the same JSON), timing each step over them all.
fn sealing_in_memory(count: usize, customers: usize) -> SealingInMemory {
    use rapport_common::privacy::{DataKey, SecretKey, pseudonym};
    use rapport_ingest::seal;
    let mut errors = Vec::new();
    let clear: Vec<rapport_proto::v1::Event> = generate(0..count, customers)
        .iter()
        .enumerate()
        .map(|(index, value)| {
            let mut event = rapport_ingest::validate::event_from_json(index, value, &mut errors);
            rapport_ingest::validate::check_event(index, &mut event, &mut errors);
            event
        })
        .collect();
    assert!(
        errors.is_empty(),
        "generated events must be valid: {errors:?}"
    );
    let pseudonym_key = SecretKey::random().expect("randomness");
    let data_key = DataKey {
        subject: String::new(),
        // As long as the vault's key ids.
        key_id: "0123456789abcdef".to_owned(),
        key: SecretKey::random().expect("randomness"),
    };
    let per_event = |elapsed: Duration| elapsed.as_secs_f64() * 1e6 / count as f64;

    let mut sealed = clear.clone();
    let started = Instant::now();
    for event in &mut sealed {
        let key = DataKey {
            subject: seal::subject(event, &pseudonym_key),
            ..data_key.clone()
        };
        seal::seal_event(event, &key, &pseudonym_key).expect("seal");
    }
    let seal_us = per_event(started.elapsed());

    let started = Instant::now();
    let mut hashed = 0usize;
    for event in &clear {
        // The subject's pseudonym, then one for each identifier, as
        // `seal_batch` computes them.
        hashed += seal::subject(event, &pseudonym_key).len();
        let customer = event.customer.as_ref().expect("every event names someone");
        for (kind, value) in [
            ("customer_id", &customer.customer_id),
            ("email", &customer.email),
            ("phone", &customer.phone),
            ("anonymous_id", &customer.anonymous_id),
        ] {
            if !value.is_empty() {
                hashed += pseudonym(&pseudonym_key, kind, value).len();
            }
        }
    }
    let pseudonyms_us = per_event(started.elapsed());
    assert!(hashed > 0);

    let encode = |events: &[rapport_proto::v1::Event]| {
        let started = Instant::now();
        let bytes: usize = events.iter().map(|event| event.encode_to_vec().len()).sum();
        (per_event(started.elapsed()), bytes as f64 / count as f64)
    };
    let (encode_sealed_us, sealed_bytes) = encode(&sealed);
    let (encode_clear_us, clear_bytes) = encode(&clear);
    SealingInMemory {
        seal_us,
        pseudonyms_us,
        encode_sealed_us,
        encode_clear_us,
        sealed_bytes,
        clear_bytes,
    }
}

/// How long a reader took over the customer topic, and when its first
/// records came through: the rate after them leaves out start-up (a new
/// process, opening the store, the first fetch), which weighs on short runs.
struct Timed {
    elapsed: Duration,
    /// When the first records were counted, and how many there were then.
    first: Option<(Duration, i64)>,
}

impl Timed {
    fn rate(&self, records: i64) -> f64 {
        records as f64 / self.elapsed.as_secs_f64()
    }

    /// Records per second from the first records counted to the end, and
    /// the time before them.
    fn after_start_up(&self, records: i64) -> Option<(f64, Duration)> {
        let (at, counted) = self.first?;
        let rest = self.elapsed.checked_sub(at)?.as_secs_f64();
        (rest > 0.0).then(|| ((records - counted) as f64 / rest, at))
    }
}

/// Waits until the version `family` has applied `records` records (whatever
/// their outcome), timed from `started`.
fn wait_for_applied(
    service: &rapport_e2e::Service,
    family: &str,
    records: i64,
    started: Instant,
) -> Timed {
    let label = format!("projection=\"{family}\"");
    let mut first = None;
    rapport_e2e::wait_for(
        &format!("{family} to apply the customer topic"),
        Duration::from_secs(3600),
        || {
            std::thread::sleep(Duration::from_millis(20));
            let applied = metric_sum(
                &service.metrics(),
                "rapport_projector_records_total",
                &label,
            );
            if applied > 0 && first.is_none() {
                first = Some((started.elapsed(), applied));
            }
            applied >= records
        },
    );
    Timed {
        elapsed: started.elapsed(),
        first,
    }
}

/// The bytes RocksDB's compactions of `version` still have to rewrite, as
/// the projector's status reports them.
fn compaction_pending(service: &rapport_e2e::Service, version: &str) -> Option<u64> {
    let (code, status) = get_json(&format!(
        "http://127.0.0.1:{}/v1/admin/status",
        service.port
    ));
    if code != 200 {
        return None;
    }
    status["projections"]
        .as_array()?
        .iter()
        .find(|projection| projection["version"] == version)?["compaction_pending_bytes"]
        .as_u64()
}

/// Compaction left behind when a rebuild caught up: the bytes pending then,
/// and how long it took to get through them (compactions run at a lower
/// priority than the fold, see `rapport_common::store`).
fn compaction_left(service: &rapport_e2e::Service, version: &str) -> String {
    let Some(pending) = compaction_pending(service, version) else {
        return "-".to_owned();
    };
    let started = Instant::now();
    let mut drained = pending == 0;
    while !drained && started.elapsed() < Duration::from_secs(600) {
        std::thread::sleep(Duration::from_millis(50));
        drained = compaction_pending(service, version) == Some(0);
    }
    if drained {
        format!(
            "{:.0} MB, done {:.1} s later",
            pending as f64 / 1e6,
            started.elapsed().as_secs_f64()
        )
    } else {
        format!("{:.0} MB, not done after 600 s", pending as f64 / 1e6)
    }
}

/// How many of the machine's cores were busy since `before`
/// (`rapport_e2e::machine_cpu_ticks`).
fn machine_busy_since(before: Option<(u64, u64)>) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    match (before, rapport_e2e::machine_cpu_ticks()) {
        (Some((busy_before, total_before)), Some((busy, total))) if total > total_before => {
            let share = (busy - busy_before) as f64 / (total - total_before) as f64;
            format!("{:.2} of {cores} cores", share * cores as f64)
        }
        _ => "-".to_owned(),
    }
}

/// Where the worker of version `family` spent its threads' time, per record
/// (`rapport_projector_worker_microseconds_total`).
fn worker_stages(service: &rapport_e2e::Service, family: &str, records: i64) -> String {
    let label = format!("projection=\"{family}\"");
    let metrics: String = service
        .metrics()
        .lines()
        .filter(|line| line.contains(&label))
        .map(|line| format!("{line}\n"))
        .collect();
    ["wait_for_records", "fold", "wait_for_commit", "poll"]
        .map(|stage| {
            let micros = metric_sum(
                &metrics,
                "rapport_projector_worker_microseconds_total",
                &format!("stage=\"{stage}\""),
            );
            format!("{stage} {:.1} µs", micros as f64 / records as f64)
        })
        .join(", ")
}

/// The CPU time `service`'s threads used per record since `before` (its
/// `threads_cpu_seconds` then), by kind of thread, most first.
fn threads_per_record(
    service: &rapport_e2e::Service,
    before: &[(String, f64)],
    records: i64,
) -> String {
    let before: std::collections::HashMap<&str, f64> = before
        .iter()
        .map(|(kind, seconds)| (kind.as_str(), *seconds))
        .collect();
    let mut used: Vec<(String, f64)> = service
        .threads_cpu_seconds()
        .unwrap_or_default()
        .into_iter()
        .map(|(kind, seconds)| {
            let since = seconds - before.get(kind.as_str()).copied().unwrap_or(0.0);
            (kind, since * 1e6 / records as f64)
        })
        .filter(|(_, micros)| *micros >= 0.05)
        .collect();
    used.sort_by(|left, right| right.1.total_cmp(&left.1));
    used.iter()
        .map(|(kind, micros)| format!("{kind} {micros:.1} µs"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The broker's CPU time so far, when `make bench` said which process it is.
fn broker_cpu_seconds() -> Option<f64> {
    std::env::var("RAPPORT_BROKER_PID")
        .ok()
        .and_then(|pid| pid.parse().ok())
        .and_then(rapport_e2e::process_cpu_seconds)
}

/// CPU time per record between two readings of a process's CPU seconds.
fn per_record_us(before: Option<f64>, after: Option<f64>, records: i64) -> String {
    match (before, after) {
        (Some(before), Some(after)) => format!("{:.1} µs", (after - before) * 1e6 / records as f64),
        _ => "-".to_owned(),
    }
}

/// What a fresh projector's rebuild of the whole customer topic measured.
struct FreshRebuild {
    timed: Timed,
    rate: f64,
    peak_kib: u64,
    cpu_us: f64,
    /// The broker's CPU per record while it served the rebuild.
    broker_us: String,
    machine_busy: String,
    stages: String,
    threads: String,
    compaction: String,
}

/// Rebuilds the customer view in a fresh projector (its own process, an
/// empty store named `name`) over the whole customer topic of `pipeline`:
/// a rebuild with nothing else in the process. Waits for the compaction it
/// leaves, then stops it.
fn rebuild_fresh(pipeline: &Pipeline, name: &str, records: i64) -> FreshRebuild {
    // The broker's CPU time per record it served, beside the client's: on
    // a machine whose cores both share, a rebuild is bound by the broker
    // only if the two together fit.
    let broker_before = broker_cpu_seconds();
    let machine_before = rapport_e2e::machine_cpu_ticks();
    let started = Instant::now();
    let rebuild = Pipeline::start_projector_only(pipeline, name);
    let timed = wait_for_applied(&rebuild, "customer_view.v1", records, started);
    let cpu_seconds = || rebuild.cpu_seconds().unwrap_or(0.0);
    let rate = timed.rate(records);
    let peak_kib = rebuild.peak_memory_kib().unwrap_or(0);
    let cpu_us = cpu_seconds() * 1e6 / records as f64;
    let broker_us = per_record_us(broker_before, broker_cpu_seconds(), records);
    // How much of the machine the rebuild (and the broker serving it) kept busy.
    let machine_busy = machine_busy_since(machine_before);
    // Where the worker's threads' time went, per record.
    let stages = worker_stages(&rebuild, "customer_view.v1", records);
    // And the CPU of each kind of thread, the projector's, librdkafka's
    // and RocksDB's alike.
    let threads = threads_per_record(&rebuild, &[], records);
    let compaction = format!(
        "{}; CPU per record counting it {:.1} µs",
        compaction_left(&rebuild, "v1"),
        cpu_seconds() * 1e6 / records as f64
    );
    FreshRebuild {
        timed,
        rate,
        peak_kib,
        cpu_us,
        broker_us,
        machine_busy,
        stages,
        threads,
        compaction,
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

/// What the fold and commit alone reached, fed from memory.
struct FromMemory {
    rate: f64,
    cpu_us: String,
    fold_us: f64,
    wait_us: f64,
}

/// Reads `topic` from its beginning to the end of every partition with a
/// plain consumer, handing each record to `each`, in the order a
/// projector consumes them.
fn read_whole_topic(
    kafka: &rapport_common::config::KafkaConfig,
    topic: &str,
    client_id: &str,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) {
    let (consumer, _) =
        rapport_common::kafka::assigning_consumer(kafka, client_id, true).expect("consumer");
    let partitions =
        rapport_common::kafka::partition_count(&consumer, topic, Duration::from_secs(10))
            .expect("partitions");
    let starts: Vec<_> = (0..partitions)
        .map(|partition| (partition, rdkafka::Offset::Beginning))
        .collect();
    rapport_common::kafka::assign(&consumer, topic, &starts).expect("assign");
    let mut at_end = std::collections::BTreeSet::new();
    while (at_end.len() as i32) < partitions {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(message)) => each(&message),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            _ => {}
        }
    }
}

/// Reads `topic` whole with a plain consumer that does nothing with the
/// records: how long it took, and how many there were.
fn timed_read(
    kafka: &rapport_common::config::KafkaConfig,
    topic: &str,
    client_id: &str,
) -> (Timed, i64) {
    let started = Instant::now();
    let mut consumed = 0i64;
    let mut first = None;
    read_whole_topic(kafka, topic, client_id, |_| {
        consumed += 1;
        first.get_or_insert_with(|| (started.elapsed(), consumed));
    });
    let timed = Timed {
        elapsed: started.elapsed(),
        first,
    };
    (timed, consumed)
}

/// Every record of `topic`, copied out of the consumer.
fn read_customer_topic(
    kafka: &rapport_common::config::KafkaConfig,
    topic: &str,
) -> Vec<rapport_projector::apply::Consumed> {
    use rdkafka::message::Message as _;
    let mut records = Vec::new();
    read_whole_topic(kafka, topic, "rapport-bench-copy", |message| {
        records.push(rapport_projector::apply::Consumed {
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
            key: message.key().unwrap_or_default().to_vec(),
            payload: message.payload().unwrap_or_default().to_vec(),
            retry_of: None,
        })
    });
    records
}

/// Writes `rows` orders of `customers` customers as CSV and times
/// `rapportctl import orders` of it, end to end; rows/s.
fn import_orders(pipeline: &Pipeline, rows: usize, customers: usize) -> f64 {
    use std::fmt::Write as _;
    let directory = tempfile::tempdir().expect("a directory");
    let file = directory.path().join("orders.csv");
    let mut text = String::from("order_id,occurred_at,customer_id,total,currency\n");
    for row in 0..rows {
        let day = 1 + row % 28;
        let month = 1 + (row / 28) % 12;
        writeln!(
            text,
            "imported-{row},2019-{month:02}-{day:02},c-{},{}.{:02},USD",
            row % customers.max(1),
            10 + row % 90,
            row % 100
        )
        .expect("a String takes any text");
    }
    std::fs::write(&file, text).expect("the CSV is written");
    let ingest = pipeline.ingest_url();
    let started = Instant::now();
    let said = pipeline.rapportctl(&[
        "import",
        "orders",
        file.to_str().expect("a UTF-8 path"),
        "--ingest-url",
        &ingest,
    ]);
    let elapsed = started.elapsed();
    assert!(
        said.contains(&format!("{rows} events sent, 0 refused")),
        "{said}"
    );
    rows as f64 / elapsed.as_secs_f64()
}

fn main() {
    let total = env_number("RAPPORT_BENCH_EVENTS", 100_000);
    // Twenty events per customer unless told otherwise, whatever the total.
    let customers = env_number("RAPPORT_BENCH_CUSTOMERS", (total / 20).max(1));
    let clients = env_number("RAPPORT_BENCH_CLIENTS", 4);
    let batch_size = 500;
    println!(
        "rapport-bench: {total} events, {customers} customers, {clients} HTTP clients, batches of {batch_size}"
    );

    let pipeline = Pipeline::start("bench");
    let batch_count = total.div_ceil(batch_size);

    // 1a. Through ingest.
    let ingested = ingest_over_http(&pipeline, total, customers, clients, batch_size);
    let (ingest_elapsed, ingest_rate) = (ingested.elapsed, ingested.rate);

    // 1b. The same kind of records straight from rdkafka, same producer settings.
    let copy_topic = format!("{}.producer-baseline", pipeline.topics.raw);
    create_topics(&[(&copy_topic, 4, rapport_e2e::Role::Customer)]);
    let kafka = rapport_e2e::kafka();
    let (producer, _) = rapport_common::kafka::producer(
        &kafka,
        "rapport-bench",
        Some(Duration::from_secs(30)),
        1_000_000,
    )
    .expect("producer");
    // Encoded ahead in chunks, so that the clock sees only the producer.
    let mut producer_elapsed = Duration::ZERO;
    let chunk = 200_000;
    for first in (0..total).step_by(chunk) {
        let mut errors = Vec::new();
        let records: Vec<(String, Vec<u8>)> =
            generate(first..(first + chunk).min(total), customers)
                .iter()
                .enumerate()
                .map(|(index, value)| {
                    let mut event =
                        rapport_ingest::validate::event_from_json(index, value, &mut errors);
                    rapport_ingest::validate::check_event(index, &mut event, &mut errors);
                    (
                        rapport_ingest::validate::partition_key(&event),
                        event.encode_to_vec(),
                    )
                })
                .collect();
        assert!(
            errors.is_empty(),
            "generated events must be valid: {errors:?}"
        );
        let started = Instant::now();
        let mut deliveries = Vec::with_capacity(records.len());
        for (key, payload) in &records {
            let record = rdkafka::producer::FutureRecord::to(&copy_topic)
                .key(key)
                .payload(payload);
            deliveries.push(
                producer
                    .send_result(record)
                    .map_err(|(error, _)| error)
                    .expect("enqueue"),
            );
        }
        for delivery in deliveries {
            rapport_e2e::block_on(delivery)
                .expect("delivered")
                .expect("acknowledged");
        }
        producer_elapsed += started.elapsed();
    }
    let producer_rate = total as f64 / producer_elapsed.as_secs_f64();

    // 2a. A fresh projector (its own process, empty store) over the whole
    // customer topic: a rebuild with nothing else in the process.
    let AfterIngest {
        services_cpu_us,
        customer_records,
        fresh,
        record_bytes,
    } = rebuild_after_ingest(&pipeline, &ingested, total, "rapport-bench-size");

    // 4. (measured here, beside 1a and 2a, and printed last) The same
    // ingest and fresh rebuild with sealing off, on a pipeline of its own
    // that is gone before the next measure starts. This one's services
    // stay up meanwhile, idle.
    let clear = measure_clear(total, customers, clients, batch_size);
    let sealing = sealing_in_memory(total.min(100_000), customers);

    // 2b. A plain rdkafka consumer reading the same topic from the start,
    // with the fetch wait of a projector catching up: how fast the broker
    // serves records to a client that does nothing.
    let broker_before = broker_cpu_seconds();
    let reader_before = rapport_e2e::process_cpu_seconds(std::process::id());
    let (read, consumed) = {
        let mut kafka = kafka.clone();
        kafka.properties.insert(
            "fetch.wait.max.ms".into(),
            rapport_common::kafka::CATCH_UP_FETCH_WAIT_MS.to_string(),
        );
        timed_read(&kafka, &pipeline.topics.customer, "rapport-bench-read")
    };
    let read_rate = read.rate(consumed);
    let read_broker_us = per_record_us(broker_before, broker_cpu_seconds(), customer_records);
    let reader_us = per_record_us(
        reader_before,
        rapport_e2e::process_cpu_seconds(std::process::id()),
        customer_records,
    );

    // 2c. The same plain consumer with the steady fetch wait: tansu holds
    // each fetch answer for the whole wait (see `kafka::FETCH_WAIT_MS`), so
    // this is how fast a consumer that never switched would read.
    let (held, held_consumed) =
        timed_read(&kafka, &pipeline.topics.customer, "rapport-bench-read-held");
    assert_eq!(
        held_consumed, customer_records,
        "the steady-wait read missed records"
    );
    let held_rate = held.rate(customer_records);

    // 2d. The projector's fold and commit alone, fed the same records from
    // memory: what a rebuild would reach if the broker cost nothing.
    let from_memory = {
        let records = read_customer_topic(&kafka, &pipeline.topics.customer);
        let batches: Vec<Vec<rapport_projector::apply::Consumed>> = records
            .chunks(
                rapport_common::config::Config::default()
                    .projector
                    .max_batch,
            )
            .map(<[_]>::to_vec)
            .collect();
        drop(records);
        let directory = tempfile::tempdir().expect("temp dir");
        let family = rapport_projector::apply::CUSTOMER_VIEW;
        // As the projector opens its store.
        let store = rapport_common::store::Store::open_tuned(
            directory.path(),
            &[family],
            rapport_common::store::Merging::Late.into(),
        )
        .expect("store");
        let metrics = rapport_projector::apply::ApplyMetrics::new(
            &rapport_common::metrics::Registry::default(),
            family,
        );
        let topics = rapport_common::config::TopicNames::default();
        let cpu_before = rapport_e2e::process_cpu_seconds(std::process::id());
        let started = Instant::now();
        rapport_projector::apply::apply_from_memory(
            &store,
            family,
            &batches,
            &metrics,
            rapport_projector::apply::DeadLetters {
                topics: &topics,
                publish: &mut |_| Ok(()),
            },
        )
        .expect("fold from memory");
        let elapsed = started.elapsed();
        let applied = batches.iter().map(Vec::len).sum::<usize>();
        FromMemory {
            rate: applied as f64 / elapsed.as_secs_f64(),
            cpu_us: per_record_us(
                cpu_before,
                rapport_e2e::process_cpu_seconds(std::process::id()),
                applied as i64,
            ),
            fold_us: metrics.folding_us.get() as f64 / applied as f64,
            wait_us: metrics.waiting_for_commit_us.get() as f64 / applied as f64,
        }
    };

    // 2e. `rapportctl replay` beside the live version, timed from the request
    // until the new version applied every record.
    pipeline.projector.reset_peak_memory();
    let cpu_before = pipeline.projector.cpu_seconds().unwrap_or(0.0);
    let threads_before = pipeline.projector.threads_cpu_seconds().unwrap_or_default();
    let machine_before = rapport_e2e::machine_cpu_ticks();
    let started = Instant::now();
    let replayed =
        pipeline.rapportctl(&["replay", "customer_view", "--version", "bench", "--no-wait"]);
    assert!(replayed.contains("bench"), "{replayed}");
    let replay = wait_for_applied(
        &pipeline.projector,
        "customer_view.bench",
        customer_records,
        started,
    );
    let replay_rate = replay.rate(customer_records);
    let replay_machine_busy = machine_busy_since(machine_before);
    let replay_stages = worker_stages(&pipeline.projector, "customer_view.bench", customer_records);
    let replay_threads = threads_per_record(&pipeline.projector, &threads_before, customer_records);
    let replay_peak_kib = pipeline.projector.peak_memory_kib().unwrap_or(0);
    let replay_cpu_us = (pipeline.projector.cpu_seconds().unwrap_or(0.0) - cpu_before) * 1e6
        / customer_records as f64;
    let replay_compaction = compaction_left(&pipeline.projector, "bench");

    // 3. Query latency under load: ingest keeps sending while clients read.
    let stop = Arc::new(AtomicBool::new(false));
    let background = {
        let (stop, url) = (stop.clone(), pipeline.ingest_url());
        std::thread::spawn(move || {
            let agent = http_agent();
            // Fresh event ids, so the load is real work and not duplicates.
            for index in (0..batch_count).cycle() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let fresh = generate(
                    index * batch_size..((index + 1) * batch_size).min(total),
                    customers,
                );
                let body = serde_json::to_vec(&json!({ "events": fresh })).expect("json");
                let _ = agent
                    .post(&format!("{url}/v1/events"))
                    .header("content-type", "application/json")
                    .header("authorization", bearer(&test_keys().write))
                    .send(&body[..]);
            }
        })
    };
    let query_url = pipeline.query_url();
    let requests_per_client = env_number("RAPPORT_BENCH_QUERIES", 2_000);
    let mut latencies: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|client| {
                let query_url = &query_url;
                scope.spawn(move || {
                    let mut timings = Vec::with_capacity(requests_per_client);
                    for request in 0..requests_per_client {
                        let id = (client * 7919 + request * 104_729) % customers;
                        let started = Instant::now();
                        let (status, _) = get_json(&format!("{query_url}/v1/customers/c-{id}"));
                        timings.push(started.elapsed());
                        assert_eq!(status, 200, "c-{id}");
                    }
                    timings
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("query client"))
            .collect()
    });
    stop.store(true, Ordering::Relaxed);
    let _ = background.join();
    latencies.sort();

    // 5. A history import through the same ingest.
    let import_rows = total.min(100_000);
    let import_rate = import_orders(&pipeline, import_rows, customers);

    // 1c. More clients at once: where ingest's rate stops growing.
    let sweep_total = total.min(100_000);
    let sweep: Vec<(usize, Ingested)> = [16, 64]
        .into_iter()
        .map(|many| {
            (
                many,
                ingest_over_http(&pipeline, sweep_total, customers, many, batch_size),
            )
        })
        .collect();
    let parse_us = parsing_in_memory(total.min(100_000), customers, batch_size);

    // 6. The same workload as Segment messages through the tracking API.
    let segment_rate = segment_over_http(&pipeline, total, customers, clients, batch_size);

    println!();
    println!("| measure | result |");
    println!("| --- | --- |");
    println!(
        "| ingest, HTTP batches of {batch_size} to broker ack | {ingest_rate:.0} events/s ({total} in {:.1} s) |",
        ingest_elapsed.as_secs_f64()
    );
    println!(
        "| plain rdkafka producer, same records and settings | {producer_rate:.0} events/s ({total} in {:.1} s) |",
        producer_elapsed.as_secs_f64()
    );
    println!("| ingest / producer | {:.2} |", ingest_rate / producer_rate);
    println!(
        "| ingest request latency, {clients} clients: p50, p99 | {:.1} ms, {:.1} ms |",
        ingested.p50.as_secs_f64() * 1e3,
        ingested.p99.as_secs_f64() * 1e3
    );
    for (many, run) in &sweep {
        println!(
            "| ingest with {many} clients ({sweep_total} events): rate, of the producer; request p50, p99 | {:.0} events/s, {:.2}; {:.1} ms, {:.1} ms |",
            run.rate,
            run.rate / producer_rate,
            run.p50.as_secs_f64() * 1e3,
            run.p99.as_secs_f64() * 1e3
        );
    }
    println!(
        "| where ingest's CPU goes, per event in this process: JSON parsed, mapped and checked; sealed; encoded (the producer's share is the baseline's) | {parse_us:.1} µs; {:.1} µs; {:.1} µs |",
        sealing.seal_us, sealing.encode_sealed_us
    );
    println!(
        "| Segment `POST /v1/batch`, batches of {batch_size}, vs `POST /v1/events` | {segment_rate:.0} vs {ingest_rate:.0} events/s ({:.2}) |",
        segment_rate / ingest_rate
    );
    println!(
        "| history import, `rapportctl import orders` of {import_rows} CSV rows through ingest (target 50 000 rows/s) | {import_rate:.0} rows/s |"
    );
    println!(
        "| plain rdkafka consumer reading the customer topic, fetch.wait.max.ms={} as a projector catching up | {read_rate:.0} records/s ({consumed} in {:.1} s) |",
        rapport_common::kafka::CATCH_UP_FETCH_WAIT_MS,
        read.elapsed.as_secs_f64()
    );
    println!(
        "| CPU time per record of the broker serving it; of that plain consumer | {read_broker_us}; {reader_us} |"
    );
    println!(
        "| customer view rebuilt by a fresh projector (own process, empty store) | {:.0} records/s ({customer_records} in {:.1} s), {:.2} of the plain read rate |",
        fresh.rate,
        fresh.timed.elapsed.as_secs_f64(),
        fresh.rate / read_rate
    );
    println!(
        "| peak resident memory of that projector; its CPU time per record; the broker's | {} MiB; {:.1} µs; {} |",
        fresh.peak_kib / 1024,
        fresh.cpu_us,
        fresh.broker_us
    );
    println!(
        "| that projector's applying thread per record, and its polling thread | {} |",
        fresh.stages
    );
    println!(
        "| that projector's CPU per record by kind of thread | {} |",
        fresh.threads
    );
    println!(
        "| the whole machine's CPU in use during that rebuild | {} |",
        fresh.machine_busy
    );
    println!(
        "| compaction that rebuild left for after it caught up | {} |",
        fresh.compaction
    );
    println!(
        "| the same fold and commit fed from memory (no broker), in the bench process | {:.0} records/s, {:.2} of the plain read rate; CPU per record {}; folding {:.1} µs, waiting for the commit {:.1} µs per record |",
        from_memory.rate,
        from_memory.rate / read_rate,
        from_memory.cpu_us,
        from_memory.fold_us,
        from_memory.wait_us
    );
    println!(
        "| `rapportctl replay` beside the live version | {replay_rate:.0} records/s ({customer_records} in {:.1} s), {:.2} of the plain read rate |",
        replay.elapsed.as_secs_f64(),
        replay_rate / read_rate
    );
    println!(
        "| peak resident memory of the projector during the replay (live + rebuild); its CPU time per record | {} MiB; {replay_cpu_us:.1} µs |",
        replay_peak_kib / 1024
    );
    println!(
        "| the replay's applying thread per record, and its polling thread | {replay_stages} |"
    );
    println!(
        "| the projector's CPU per record during the replay by kind of thread | {replay_threads} |"
    );
    println!("| the whole machine's CPU in use during the replay | {replay_machine_busy} |");
    println!("| compaction the replay left for after it caught up | {replay_compaction} |");
    // Short runs are weighed down by start-up; the rate after the first
    // records shows the steady pace of each reader, here as a share of the
    // plain consumer's steady pace.
    let steady = |timed: &Timed, records: i64| match timed.after_start_up(records) {
        Some((rate, start_up)) => format!(
            "{rate:.0} records/s after {:.2} s of start-up ({:.2})",
            start_up.as_secs_f64(),
            rate / read
                .after_start_up(consumed)
                .map_or(read_rate, |(rate, _)| rate)
        ),
        None => "-".to_owned(),
    };
    println!(
        "| after the first records: plain consumer; fresh projector; replay (ratio to the plain consumer's) | {}; {}; {} |",
        steady(&read, consumed),
        steady(&fresh.timed, customer_records),
        steady(&replay, customer_records)
    );
    println!(
        "| the plain consumer at the steady fetch.wait.max.ms={} (tansu holds each fetch answer for the whole wait), overall and after the first records; the fresh rebuild and the replay as a multiple of it | {held_rate:.0} records/s ({customer_records} in {:.1} s), {}; {:.2}; {:.2} |",
        rapport_common::kafka::FETCH_WAIT_MS,
        held.elapsed.as_secs_f64(),
        steady(&held, customer_records),
        fresh.rate / held_rate,
        replay_rate / held_rate,
    );
    println!(
        "| GET /v1/customers/{{id}}, {clients} clients, ingest running | p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} requests |",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        latencies.len()
    );
    let versus = |sealed: f64, clear: f64, unit: &str| {
        format!("{sealed:.0} vs {clear:.0} {unit} ({:.2})", sealed / clear)
    };
    let versus_us =
        |sealed: f64, clear: f64| format!("{sealed:.1} vs {clear:.1} µs ({:.2})", sealed / clear);
    let after_start_up = |timed: &Timed| {
        timed
            .after_start_up(customer_records)
            .map_or(0.0, |(rate, _)| rate)
    };
    println!(
        "| ingest, sealed vs clear (same events, batches and clients; ratio) | {} |",
        versus(ingest_rate, clear.ingested.rate, "events/s")
    );
    println!(
        "| ingest's CPU per event, sealed vs clear; ingest's, identity's and the projector's until caught up | {}; {} |",
        versus_us(ingested.ingest_cpu_us, clear.ingested.ingest_cpu_us),
        versus_us(services_cpu_us, clear.services_cpu_us)
    );
    println!(
        "| customer view rebuilt by a fresh projector, sealed vs clear; after the first records | {}; {} |",
        versus(fresh.rate, clear.fresh.rate, "records/s"),
        versus(
            after_start_up(&fresh.timed),
            after_start_up(&clear.fresh.timed),
            "records/s"
        )
    );
    println!(
        "| that projector's CPU per record, sealed vs clear; peak resident memory; mean customer record size | {}; {} vs {} MiB; {} |",
        versus_us(fresh.cpu_us, clear.fresh.cpu_us),
        fresh.peak_kib / 1024,
        clear.fresh.peak_kib / 1024,
        versus(record_bytes, clear.record_bytes, "bytes")
    );
    println!(
        "| that projector's CPU per record by kind of thread, sealed; clear | {}; {} |",
        fresh.threads, clear.fresh.threads
    );
    println!(
        "| sealing alone, in the bench process (one cached data key): per event; of which pseudonyms; encoding the event, sealed vs clear; its size | {:.1} µs; {:.1} µs; {}; {} |",
        sealing.seal_us,
        sealing.pseudonyms_us,
        versus_us(sealing.encode_sealed_us, sealing.encode_clear_us),
        versus(sealing.sealed_bytes, sealing.clear_bytes, "bytes")
    );
}
