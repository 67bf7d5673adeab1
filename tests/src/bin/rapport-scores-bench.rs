//! `make bench`, analytics part: scores for many customers.
//!
//! Folds a synthetic purchase history for `RAPPORT_SCORES_CUSTOMERS`
//! (default 1 000 000) customers into a real RocksDB store with the
//! projector's own fold, serves the query API from this process on a local
//! port, and measures over HTTP: the first scan of every profile, a fit of
//! BG/NBD and Gamma-Gamma, a full re-score of everyone for a new `as_of`, and the
//! latency of `GET /v1/customers/{id}/scores` under load from several
//! clients, every page of the dashboard (one customer has a history of
//! [`LONG_HISTORY`] orders), with the process's peak resident memory. No
//! broker: this times the analytics, not the log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use rapport_common::config::TopicNames;
use rapport_common::kafka::Outgoing;
use rapport_common::metrics::Registry;
use rapport_common::store::Store;
use rapport_projector::apply::{ApplyMetrics, Consumed, DeadLetters, apply_batch};
use rapport_projector::position::{Positions, TimeWindow};
use rapport_projector::query::QueryState;
use rapport_projector::router::router;
use rapport_projector::versions::{FIRST_VERSION, Versions, family_of};
use rapport_proto::v1::{self as proto, customer_record::Body};

const DAY_MS: i64 = 86_400_000;
/// 2026-11-01, the `as_of` of the measurements.
const AS_OF_DAY: i64 = 20_758;
/// Orders of the one customer with a long history, `c-9999999`.
const LONG_HISTORY: u64 = 20_000;
const LONG_HISTORY_ID: u64 = 9_999_999;
/// Requests per dashboard page measured.
const PAGE_REQUESTS: usize = 40;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// SplitMix64: a small, seedable generator for synthetic data.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

fn order_record(customer: u64, sequence: u64, day: i64, total_minor: i64) -> proto::CustomerRecord {
    let id = format!("c-{customer:07}");
    proto::CustomerRecord {
        customer_id: id.clone(),
        source: Some(proto::SourcePosition {
            raw_partition: 0,
            raw_offset: sequence as i64,
            index: 0,
        }),
        received_at_ms: day * DAY_MS,
        body: Some(Body::Event(proto::EventResolved {
            event: Some(proto::Event {
                event_id: format!("e-{sequence}"),
                r#type: "order.placed".into(),
                occurred_at_ms: day * DAY_MS + 12 * 3_600_000,
                channel: "web".into(),
                payload: Some(proto::event::Payload::OrderPlaced(proto::OrderPlaced {
                    order_id: format!("o-{sequence}"),
                    total_minor,
                    currency: "USD".into(),
                    items: vec![],
                })),
                ..Default::default()
            }),
            linked: vec![proto::Identifier {
                kind: "customer_id".into(),
                value: id,
            }],
        })),
    }
}

/// `record` as read from partition 0 at offset `sequence`.
fn consumed(record: proto::CustomerRecord, sequence: u64, day: i64) -> Consumed {
    Consumed {
        partition: 0,
        offset: sequence as i64,
        timestamp_ms: day * DAY_MS,
        key: Vec::new(),
        retry_of: None,
        payload: record.encode_to_vec(),
    }
}

/// Writes every customer's orders through the projector's fold.
fn populate(store: &Store, customers: u64) -> u64 {
    let family = family_of(FIRST_VERSION);
    let metrics = ApplyMetrics::new(&Registry::default(), &family);
    let mut positions = Positions::default();
    let mut random = Random(42);
    let mut batch = Vec::new();
    let mut sequence = 0_u64;
    let flush = |batch: &mut Vec<Consumed>, positions: &mut Positions| {
        apply_batch(
            store,
            &family,
            batch,
            positions,
            &metrics,
            TimeWindow::default(),
            DeadLetters {
                topics: &TopicNames::default(),
                publish: &mut |_: &[Outgoing]| Ok(()),
            },
        )
        .expect("the fold applies the synthetic history");
        batch.clear();
    };
    for customer in 0..customers {
        // Acquired over two years; each buys at their own rate, some stop.
        let first = AS_OF_DAY - 730 + random.below(700) as i64;
        let gap = 5 + random.below(120) as i64;
        let purchases = 1 + random.below(8);
        let mut day = first;
        for _ in 0..purchases {
            if day > AS_OF_DAY {
                break;
            }
            let total = 1_500 + random.below(30_000) as i64;
            batch.push(consumed(
                order_record(customer, sequence, day, total),
                sequence,
                day,
            ));
            sequence += 1;
            day += 1 + random.below(2 * gap as u64) as i64;
            if random.below(10) == 0 {
                break;
            }
        }
        if batch.len() >= 5_000 {
            flush(&mut batch, &mut positions);
        }
    }
    // One customer who bought every day or so for years.
    for number in 0..LONG_HISTORY {
        let day = AS_OF_DAY - (LONG_HISTORY - number) as i64 / 8;
        let total = 2_000 + (number % 97) as i64;
        batch.push(consumed(
            order_record(LONG_HISTORY_ID, sequence, day, total),
            sequence,
            day,
        ));
        sequence += 1;
        if batch.len() >= 5_000 {
            flush(&mut batch, &mut positions);
        }
    }
    if !batch.is_empty() {
        flush(&mut batch, &mut positions);
    }
    sequence
}

/// GETs a dashboard page until it answers 200 rather than 202 (its figures
/// being gathered); says how long the first answer took and how long until
/// the page was ready.
fn ready(agent: &ureq::Agent, url: &str) -> (Duration, Duration) {
    let started = Instant::now();
    let mut first = None;
    loop {
        let (elapsed, status) = timed_get(agent, url);
        first.get_or_insert(elapsed);
        match status {
            200 => return (first.unwrap_or(elapsed), started.elapsed()),
            202 => std::thread::sleep(Duration::from_millis(100)),
            other => panic!("{url}: {other}"),
        }
    }
}

/// A dashboard page's path for the n-th request.
type PagePath<'a> = Box<dyn Fn(usize) -> String + 'a>;

/// Times `PAGE_REQUESTS` GETs of each dashboard page (after one to warm
/// it) and prints p50, p99 and max per page.
fn measure_dashboard(agent: &ureq::Agent, base: &str, as_of: &str, customers: u64) {
    let (answer, first) = ready(agent, &format!("{base}/ui/?as_of={as_of}"));
    println!(
        "[scores-bench] dashboard, first overview at an as_of: answered (202) in {:.1} ms while one pass over everyone's scores gathered the figures in {:.1} s",
        answer.as_secs_f64() * 1000.0,
        first.as_secs_f64()
    );
    let whale = format!("c-{LONG_HISTORY_ID:07}");
    let jump = rapport_projections::time::format_day(AS_OF_DAY - 900);
    let pages: Vec<(String, PagePath)> = vec![
        (
            "overview".into(),
            Box::new(|_| format!("/ui/?as_of={as_of}")),
        ),
        (
            "churn".into(),
            Box::new(|n| format!("/ui/churn?as_of={as_of}&page={}", 1 + n % 20)),
        ),
        (
            "segments".into(),
            Box::new(|_| format!("/ui/segments?as_of={as_of}")),
        ),
        (
            "models".into(),
            Box::new(|_| format!("/ui/models?as_of={as_of}")),
        ),
        (
            "cohorts".into(),
            Box::new(|_| format!("/ui/cohorts?as_of={as_of}")),
        ),
        (
            "people of an RFM cell".into(),
            Box::new(|n| {
                format!(
                    "/ui/people?rfm={}-{}&as_of={as_of}",
                    1 + n % 5,
                    1 + (n / 5) % 5
                )
            }),
        ),
        (
            "customer 360, random customers".into(),
            Box::new(move |n| {
                format!(
                    "/ui/customers/c-{:07}?as_of={as_of}",
                    (n as u64 * 7_919) % customers
                )
            }),
        ),
        (
            format!("customer 360, {LONG_HISTORY} orders"),
            Box::new(|_| format!("/ui/customers/{whale}?as_of={as_of}")),
        ),
        (
            format!("timeline jump, {LONG_HISTORY} orders"),
            Box::new(|_| format!("/ui/customers/{whale}/timeline?date={jump}")),
        ),
        ("ops".into(), Box::new(|_| "/ui/ops".to_owned())),
    ];
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    let mut worst = Duration::ZERO;
    for (name, path) in &pages {
        let (_, warm) = ready(agent, &format!("{base}{}", path(0)));
        let mut latencies: Vec<Duration> = (1..=PAGE_REQUESTS)
            .map(|n| {
                let (elapsed, status) = timed_get(agent, &format!("{base}{}", path(n)));
                assert_eq!(status, 200, "{name}: {}", path(n));
                elapsed
            })
            .collect();
        latencies.sort_unstable();
        let p99 = percentile(&latencies, 0.99);
        worst = worst.max(p99);
        println!(
            "[scores-bench] dashboard page {name}: ready in {:.0} ms, then p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(warm),
            ms(percentile(&latencies, 0.5)),
            ms(p99),
            ms(*latencies.last().expect("requests were made")),
        );
    }
    println!(
        "[scores-bench] dashboard, slowest page p99: {:.1} ms (target: 200 ms)",
        ms(worst)
    );
}

fn peak_memory_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn timed_get(agent: &ureq::Agent, url: &str) -> (Duration, u16) {
    let started = Instant::now();
    let status = match agent.get(url).call() {
        Ok(mut response) => {
            let _ = response.body_mut().read_to_string();
            response.status().as_u16()
        }
        Err(error) => panic!("GET {url}: {error}"),
    };
    (started.elapsed(), status)
}

/// The RFM segment with the most members at `as_of`, and their number.
fn largest_rfm_segment(agent: &ureq::Agent, base: &str, as_of: &str) -> (String, u64) {
    let body: serde_json::Value = agent
        .get(format!("{base}/v1/segments?as_of={as_of}"))
        .call()
        .expect("segments answer")
        .body_mut()
        .read_json()
        .expect("segments are JSON");
    body["rfm"]
        .as_object()
        .expect("RFM counts")
        .iter()
        .map(|(name, count)| (name.clone(), count.as_u64().unwrap_or(0)))
        .max_by_key(|(_, count)| *count)
        .expect("at least one RFM segment")
}

/// Reads every page of 1 000 members of `segment` as CSV, as a mailing-list
/// export would, and returns each page's latency.
fn page_through_segment(
    agent: &ureq::Agent,
    base: &str,
    as_of: &str,
    segment: &str,
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!(
            "{base}/v1/segments/rfm/{segment}/customers?as_of={as_of}&limit=1000&format=csv"
        );
        if let Some(after) = &cursor {
            url.push_str(&format!("&cursor={after}"));
        }
        let started = Instant::now();
        let mut response = agent.get(&url).call().expect("a page of members");
        let next = response
            .headers()
            .get("x-next-cursor")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let _ = response.body_mut().read_to_string();
        latencies.push(started.elapsed());
        match next {
            Some(after) => cursor = Some(after),
            None => return latencies,
        }
    }
}

fn percentile(sorted: &[Duration], share: f64) -> Duration {
    let rank = ((share * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn main() {
    // The projector's own log lines (scan, fit and scoring times) go to
    // stderr when RUST_LOG asks for them.
    rapport_common::init_logging_filtered(false, "warn");
    let customers = env_number("RAPPORT_SCORES_CUSTOMERS", 1_000_000);
    let requests = env_number("RAPPORT_SCORES_REQUESTS", 20_000);
    let clients = env_number("RAPPORT_SCORES_CLIENTS", 4);
    let directory = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(directory.path(), &[&family_of(FIRST_VERSION)]).expect("RocksDB opens");

    let started = Instant::now();
    let orders = populate(&store, customers);
    let populate_s = started.elapsed().as_secs_f64();
    println!(
        "[scores-bench] {customers} customers, {orders} orders folded into RocksDB in {populate_s:.1} s"
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a local port");
    let address = listener.local_addr().expect("an address");
    let app = router(
        Arc::new(QueryState::new(
            Versions::serving(store, FIRST_VERSION),
            Registry::default(),
            Default::default(),
        )),
        &rapport_common::apikeys::Gate::open_for_tests(),
    );
    runtime.spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{address}");
    let agent = rapport_e2e::http_agent_with_timeout(Duration::from_secs(3_600));
    let as_of = rapport_projections::time::format_day(AS_OF_DAY);

    let (first, status) = timed_get(&agent, &format!("{base}/v1/segments?as_of={as_of}"));
    assert_eq!(status, 200, "segments answer");
    // A cohort spanning all time is a fit over every buyer that the scores'
    // own fit (same population, same day) cannot answer from its cache.
    let (fit, status) = timed_get(
        &agent,
        &format!("{base}/v1/models/bgnbd?as_of={as_of}&cohort_from=1970-01-01&cohort_to={as_of}"),
    );
    assert_eq!(status, 200, "the BG/NBD model fits");
    let (largest_segment, members) = largest_rfm_segment(&agent, &base, &as_of);
    let pages = page_through_segment(&agent, &base, &as_of, &largest_segment);
    let next_day = rapport_projections::time::format_day(AS_OF_DAY + 1);
    let (rescore, status) = timed_get(&agent, &format!("{base}/v1/segments?as_of={next_day}"));
    assert_eq!(status, 200, "segments answer");

    let started = Instant::now();
    let latencies: Vec<Duration> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|client| {
                let (base, as_of, agent) = (&base, &as_of, &agent);
                scope.spawn(move || {
                    let mut random = Random(client + 1);
                    (0..requests / clients)
                        .map(|_| {
                            let customer = random.below(customers);
                            let url =
                                format!("{base}/v1/customers/c-{customer:07}/scores?as_of={as_of}");
                            let (elapsed, status) = timed_get(agent, &url);
                            assert!(status == 200 || status == 404, "scores answer: {status}");
                            elapsed
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("a client"))
            .collect()
    });
    let wall = started.elapsed();
    let mut sorted = latencies;
    sorted.sort_unstable();
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    println!(
        "[scores-bench] first request (scan every profile, fit, score everyone): {:.1} s",
        first.as_secs_f64()
    );
    println!(
        "[scores-bench] BG/NBD + Gamma-Gamma fit over every buyer: {:.1} s",
        fit.as_secs_f64()
    );
    println!(
        "[scores-bench] full re-score for a new as_of (fit + score everyone): {:.1} s",
        rescore.as_secs_f64()
    );
    let mut pages = pages;
    let export: Duration = pages.iter().sum();
    pages.sort_unstable();
    println!(
        "[scores-bench] CSV export of the largest RFM segment ({largest_segment}, {members} people) in {} pages of 1000: {:.1} s, p50 {:.1} ms, p99 {:.1} ms per page",
        pages.len(),
        export.as_secs_f64(),
        ms(percentile(&pages, 0.5)),
        ms(percentile(&pages, 0.99)),
    );
    println!(
        "[scores-bench] GET /v1/customers/{{id}}/scores, {clients} clients, {} requests: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        sorted.len(),
        sorted.len() as f64 / wall.as_secs_f64(),
        ms(percentile(&sorted, 0.5)),
        ms(percentile(&sorted, 0.99)),
        ms(*sorted.last().expect("requests were made")),
    );
    measure_dashboard(&agent, &base, &as_of, customers);
    println!(
        "[scores-bench] peak resident memory of this process: {:.0} MiB",
        peak_memory_mib()
    );
}
