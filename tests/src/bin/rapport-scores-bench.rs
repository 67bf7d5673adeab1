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
use rapport_projections::analytics::bg_nbd::{BgNbdParameters, fit_bg_nbd};
use rapport_projections::analytics::gamma_gamma::fit_gamma_gamma;
use rapport_projections::analytics::occasions::{RepeatSummary, repeat_summary};
use rapport_projections::analytics::simulation::{SplitMix64, simulate_bg_nbd_customer};
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

/// The projector's fold into the first version, batch by batch.
struct Fold<'a> {
    store: &'a Store,
    family: String,
    metrics: ApplyMetrics,
    positions: Positions,
}

impl<'a> Fold<'a> {
    fn new(store: &'a Store) -> Self {
        let family = family_of(FIRST_VERSION);
        let metrics = ApplyMetrics::new(&Registry::default(), &family);
        Fold {
            store,
            family,
            metrics,
            positions: Positions::default(),
        }
    }

    /// Applies `batch` and empties it.
    fn apply(&mut self, batch: &mut Vec<Consumed>) {
        apply_batch(
            self.store,
            &self.family,
            batch,
            &mut self.positions,
            &self.metrics,
            TimeWindow::default(),
            DeadLetters {
                topics: &TopicNames::default(),
                publish: &mut |_: &[Outgoing]| Ok(()),
            },
        )
        .expect("the fold applies the synthetic records");
        batch.clear();
    }
}

/// Writes every customer's orders through the projector's fold; gives the
/// orders folded.
fn populate(store: &Store, customers: u64) -> u64 {
    let mut fold = Fold::new(store);
    let mut random = Random(42);
    let mut batch = Vec::new();
    let mut sequence = 0_u64;
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
            fold.apply(&mut batch);
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
            fold.apply(&mut batch);
        }
    }
    if !batch.is_empty() {
        fold.apply(&mut batch);
    }
    sequence
}

/// Campaigns the synthetic mail belongs to.
const CAMPAIGNS: u64 = 12;

/// Folds campaign email for every other customer: each is sent one of
/// [`CAMPAIGNS`] campaigns a month before `AS_OF_DAY`, three in ten open it
/// and one in ten of those clicks. Gives the events folded.
fn populate_mail(store: &Store, customers: u64, first_sequence: u64) -> u64 {
    let mut fold = Fold::new(store);
    let mut random = Random(7);
    let mut batch = Vec::new();
    let mut sequence = first_sequence;
    for customer in (0..customers).step_by(2) {
        let campaign = format!("campaign-{}", customer % CAMPAIGNS);
        let day = AS_OF_DAY - 30 - (customer % CAMPAIGNS) as i64;
        let mut kinds = vec!["email.sent"];
        if random.below(10) < 3 {
            kinds.push("email.opened");
            if random.below(10) == 0 {
                kinds.push("email.clicked");
            }
        }
        for (step, kind) in kinds.into_iter().enumerate() {
            let message = proto::EmailMessage {
                message_id: format!("m-{customer}"),
                campaign_id: campaign.clone(),
                url: String::new(),
            };
            let payload = match kind {
                "email.sent" => proto::event::Payload::EmailSent(message),
                "email.opened" => proto::event::Payload::EmailOpened(message),
                _ => proto::event::Payload::EmailClicked(message),
            };
            let mut record = order_record(customer, sequence, day, 0);
            if let Some(Body::Event(resolved)) = record.body.as_mut() {
                let event = resolved.event.as_mut().expect("an event");
                event.r#type = kind.into();
                event.channel = "email".into();
                event.occurred_at_ms = day * DAY_MS + step as i64 * 3_600_000;
                event.payload = Some(payload);
            }
            batch.push(consumed(record, sequence, day));
            sequence += 1;
        }
        if batch.len() >= 5_000 {
            fold.apply(&mut batch);
        }
    }
    if !batch.is_empty() {
        fold.apply(&mut batch);
    }
    sequence - first_sequence
}

/// `customers` simulated from the CDNOW fits of Fader, Hardie and Lee
/// (BG/NBD r 0.24, α 4.41, a 0.79, b 2.43; Gamma-Gamma p 6.25, q 3.74,
/// γ 15.44 dollars), acquired over 12 weeks and observed to week 39: a
/// population both models fit, with drop-out and spend that varies from
/// person to person.
fn simulated_population(customers: u64) -> Vec<RepeatSummary> {
    let truth = BgNbdParameters {
        r: 0.24,
        alpha: 4.41,
        a: 0.79,
        b: 2.43,
    };
    let (p, q, gamma_cents) = (6.25, 3.74, 1_544.0);
    let mut random = SplitMix64::new(2005);
    let as_of = 272;
    (0..customers)
        .filter_map(|_| {
            let first_day = (random.uniform() * 84.0) as i64;
            let mut occasions = simulate_bg_nbd_customer(&mut random, &truth, first_day, as_of);
            let rate = random.gamma(q, 1.0 / gamma_cents);
            for occasion in &mut occasions {
                occasion.net_minor = (random.gamma(p, 1.0 / rate).round() as i64).max(1);
            }
            repeat_summary(&occasions, as_of)
        })
        .collect()
}

/// BG/NBD and Gamma-Gamma fitted over every customer of `summaries`,
/// beside the `lifetimes` package (0.11.3, installed by
/// `infra/clients.sh bench`, run by `tests/clients/fit_lifetimes.py`) on
/// the same (x, t_x, T) in weeks and mean repeat values: both fits' time
/// and parameters, and how far apart they are.
fn fit_beside_lifetimes(summaries: &[RepeatSummary]) {
    use std::fmt::Write as _;
    let started = Instant::now();
    let fit = fit_bg_nbd(summaries, None).expect("the simulated population fits");
    let ours = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let spend = fit_gamma_gamma(summaries).expect("the simulated spend fits");
    let ours_spend = started.elapsed().as_secs_f64();
    let directory = tempfile::tempdir().expect("a directory");
    let data = directory.path().join("rfm.csv");
    let mut text = String::from("x,t_x,T,m\n");
    for summary in summaries {
        writeln!(
            text,
            "{},{},{},{}",
            summary.repeat_occasions,
            summary.first_to_last_days as f64 / 7.0,
            summary.first_to_as_of_days as f64 / 7.0,
            summary.mean_repeat_value_minor().unwrap_or(0.0)
        )
        .expect("a String takes any text");
    }
    std::fs::write(&data, text).expect("the data is written");
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let installed = std::process::Command::new("bash")
        .arg(root.join("infra/clients.sh"))
        .arg("bench")
        .output()
        .expect("infra/clients.sh runs");
    let python = String::from_utf8_lossy(&installed.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let answer = std::process::Command::new(&python)
        .arg(root.join("tests/clients/fit_lifetimes.py"))
        .arg(&data)
        .output();
    let theirs: Option<serde_json::Value> = match &answer {
        Ok(output) if output.status.success() => serde_json::from_slice(&output.stdout).ok(),
        Ok(output) => {
            println!(
                "[scores-bench] lifetimes failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            None
        }
        Err(error) => {
            println!("[scores-bench] {python} could not be run: {error}");
            None
        }
    };
    let ours_parameters = fit.parameters;
    println!(
        "[scores-bench] {} customers simulated from the CDNOW fits, BG/NBD over all of them: {ours:.2} s; r {:.4}, alpha {:.4}, a {:.4}, b {:.4}; log-likelihood {:.1}",
        fit.customers,
        ours_parameters.r,
        ours_parameters.alpha,
        ours_parameters.a,
        ours_parameters.b,
        fit.log_likelihood
    );
    println!(
        "[scores-bench] Gamma-Gamma over all {} of them with a repeat purchase: {ours_spend:.2} s; p {:.4}, q {:.4}, gamma {:.2}; log-likelihood {:.1}",
        spend.customers,
        spend.parameters.p,
        spend.parameters.q,
        spend.parameters.gamma,
        spend.log_likelihood
    );
    let Some(theirs) = theirs else {
        println!(
            "[scores-bench] lifetimes 0.11.3 could not be run ({}): no yardstick",
            String::from_utf8_lossy(&installed.stderr).trim()
        );
        return;
    };
    for (model, key) in [("BG/NBD", "error"), ("Gamma-Gamma", "gg_error")] {
        if let Some(error) = theirs[key].as_str() {
            println!("[scores-bench] lifetimes 0.11.3 could not fit {model}: {error}");
        }
    }
    let number = |name: &str| theirs[name].as_f64().unwrap_or(f64::NAN);
    let apart = |ours: f64, theirs: f64| (ours - theirs).abs() / ours.abs().max(theirs.abs());
    println!(
        "[scores-bench] lifetimes 0.11.3 BG/NBD, same data: {:.2} s ({:.1} times ours); r {:.4}, alpha {:.4}, a {:.4}, b {:.4}; apart by r {:.1e}, alpha {:.1e}, a {:.1e}, b {:.1e} (relative)",
        number("seconds"),
        number("seconds") / ours,
        number("r"),
        number("alpha"),
        number("a"),
        number("b"),
        apart(ours_parameters.r, number("r")),
        apart(ours_parameters.alpha, number("alpha")),
        apart(ours_parameters.a, number("a")),
        apart(ours_parameters.b, number("b")),
    );
    println!(
        "[scores-bench] lifetimes 0.11.3 Gamma-Gamma, same data: {:.2} s ({:.1} times ours); p {:.4}, q {:.4}, gamma {:.2}; apart by p {:.1e}, q {:.1e}, gamma {:.1e} (relative)",
        number("gg_seconds"),
        number("gg_seconds") / ours_spend,
        number("gg_p"),
        number("gg_q"),
        number("gg_v"),
        apart(spend.parameters.p, number("gg_p")),
        apart(spend.parameters.q, number("gg_q")),
        apart(spend.parameters.gamma, number("gg_v")),
    );
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

/// Set to a store's directory: the process is the restarted projector.
const RESTART_FROM: &str = "RAPPORT_SCORES_RESTART_FROM";

/// A runtime, and the query API's state over `store`.
fn query_state(store: Store) -> (tokio::runtime::Runtime, Arc<QueryState>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let state = Arc::new(QueryState::new(
        Versions::serving(store, FIRST_VERSION),
        Registry::default(),
        Default::default(),
    ));
    (runtime, state)
}

/// Serves the query API of `state` on a local port; its address.
fn serve(runtime: &tokio::runtime::Runtime, state: Arc<QueryState>) -> String {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a local port");
    let address = listener.local_addr().expect("an address");
    let app = router(state, &rapport_common::apikeys::Gate::open_for_tests());
    runtime.spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

/// The restarted projector: opens the store in `directory`, reads the
/// scoreboard's image back as the projector does at start, and times its
/// first answers from the moment it started.
fn restart(directory: &std::path::Path) {
    let customers = env_number("RAPPORT_SCORES_CUSTOMERS", 1_000_000);
    let started = Instant::now();
    let store = Store::open(directory, &[&family_of(FIRST_VERSION)]).expect("RocksDB opens");
    let (runtime, state) = query_state(store);
    state
        .restore_scoreboards()
        .expect("the image is looked for");
    let base = serve(&runtime, state);
    let agent = rapport_e2e::http_agent_with_timeout(Duration::from_secs(3_600));
    let as_of = rapport_projections::time::format_day(AS_OF_DAY);
    let (first, status) = timed_get(
        &agent,
        &format!("{base}/v1/customers/c-0000001/scores?as_of={as_of}"),
    );
    assert_eq!(status, 200, "scores answer");
    let since_start = started.elapsed();
    let (segments, status) = timed_get(&agent, &format!("{base}/v1/segments?as_of={as_of}"));
    assert_eq!(status, 200, "segments answer");
    let mut random = Random(7);
    let mut sorted: Vec<Duration> = (0..1_000)
        .map(|_| {
            let customer = random.below(customers);
            timed_get(
                &agent,
                &format!("{base}/v1/customers/c-{customer:07}/scores?as_of={as_of}"),
            )
            .0
        })
        .collect();
    sorted.sort_unstable();
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    println!(
        "[scores-bench] after a restart: first GET /v1/customers/{{id}}/scores {:.2} s after the process started ({:.2} s for the request: image read back), then /v1/segments {:.1} ms, scores p50 {:.2} ms, p99 {:.2} ms",
        since_start.as_secs_f64(),
        first.as_secs_f64(),
        ms(segments),
        ms(percentile(&sorted, 0.5)),
        ms(percentile(&sorted, 0.99)),
    );
    println!(
        "[scores-bench] peak resident memory of the restarted projector (everyone's facts, the {} scored days its image keeps), {customers} customers: {:.0} MiB",
        rapport_projector::scores::IMAGE_DAYS,
        peak_memory_mib()
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
    if let Some(directory) = std::env::var_os(RESTART_FROM) {
        restart(std::path::Path::new(&directory));
        return;
    }
    let customers = env_number("RAPPORT_SCORES_CUSTOMERS", 1_000_000);
    let requests = env_number("RAPPORT_SCORES_REQUESTS", 20_000);
    let clients = env_number("RAPPORT_SCORES_CLIENTS", 4);
    let directory = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(directory.path(), &[&family_of(FIRST_VERSION)]).expect("RocksDB opens");

    let started = Instant::now();
    let orders = populate(&store, customers);
    let populate_s = started.elapsed().as_secs_f64();
    println!(
        "[scores-bench] {customers} customers, {orders} orders folded into RocksDB in {populate_s:.1} s ({:.1} µs an order)",
        populate_s * 1e6 / orders as f64
    );
    let started = Instant::now();
    let mail = populate_mail(&store, customers, orders);
    let mail_s = started.elapsed().as_secs_f64();
    println!(
        "[scores-bench] {mail} campaign email events ({CAMPAIGNS} campaigns) folded in {mail_s:.1} s: {:.1} µs an event, beside {:.1} µs an order",
        mail_s * 1e6 / mail.max(1) as f64,
        populate_s * 1e6 / orders as f64
    );

    let (runtime, state) = query_state(store);
    let base = serve(&runtime, state.clone());
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

    // The segments page started scoring everyone 30 days back for its
    // trend; the figures below are timed once that is done, so that they
    // do not share the cores with it.
    let month_before = rapport_projections::time::format_day(AS_OF_DAY - 30);
    ready(&agent, &format!("{base}/ui/?as_of={month_before}"));
    let calibration_end = rapport_projections::time::format_day(AS_OF_DAY - 182);
    let validation = format!(
        "{base}/v1/models/bgnbd/validation?calibration_end={calibration_end}&holdout_end={as_of}"
    );
    let (first_validation, status) = timed_get(&agent, &validation);
    assert_eq!(status, 200, "the validation answers");
    let (kept_validation, _) = timed_get(&agent, &validation);
    println!(
        "[scores-bench] GET /v1/models/bgnbd/validation (26-week holdout): first {:.1} s (split everyone, fit both models on the calibration period, predict), then {:.1} ms (kept)",
        first_validation.as_secs_f64(),
        ms(kept_validation)
    );
    let (list, status) = timed_get(&agent, &format!("{base}/v1/campaigns"));
    assert_eq!(status, 200, "the campaigns answer");
    let (again, _) = timed_get(&agent, &format!("{base}/v1/campaigns"));
    let (report, status) = timed_get(&agent, &format!("{base}/v1/campaigns/campaign-0"));
    assert_eq!(status, 200, "a campaign answers");
    let (report_again, _) = timed_get(&agent, &format!("{base}/v1/campaigns/campaign-0"));
    println!(
        "[scores-bench] GET /v1/campaigns over {mail} email events: {:.0} ms (then {:.0} ms); one campaign with its breakdowns: first {:.1} s (scores everyone the day before its send), then {:.0} ms",
        ms(list),
        ms(again),
        report.as_secs_f64(),
        ms(report_again)
    );

    // A restart: the scoreboard is written as the projector writes it when
    // it stops, and a new process reads it back as the projector does when
    // it starts; that process measures its own time and memory.
    let started = Instant::now();
    state
        .save_scoreboards()
        .expect("the scoreboard's image is written");
    println!(
        "[scores-bench] scoreboard's image written (as at a stop) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop((agent, state));
    // Closes the store (held by the server's tasks) for the next process.
    runtime.shutdown_timeout(Duration::from_secs(10));
    let restarted = std::process::Command::new(std::env::current_exe().expect("this program"))
        .env(RESTART_FROM, directory.path())
        .env("RAPPORT_SCORES_CUSTOMERS", customers.to_string())
        .status()
        .expect("the restarted process runs");
    assert!(restarted.success(), "the restarted process answers");
    fit_beside_lifetimes(&simulated_population(customers));
    println!(
        "[scores-bench] peak resident memory of this process: {:.0} MiB",
        peak_memory_mib()
    );
}
