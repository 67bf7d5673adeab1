//! `make bench`, several projector processes: the same log folded and
//! served by 1, 2 and 3 projector processes on this machine.
//!
//! Sends `RAPPORT_CLUSTER_BENCH_CUSTOMERS` (default 10 000) customers
//! through ingest onto an 8-partition customer topic: half of them order as
//! guests first and register later, so their profiles span partitions.
//! Then, for each layout, starts its processes at once in a deployment of
//! their own and measures:
//!
//! 1. the rebuild: every process replays its partitions from the start;
//!    wall time until all have applied everything, and records per second;
//! 2. reads: `GET /v1/customers/{id}` from several clients spread over the
//!    layout's processes; p50, p99, throughput, and the reads between
//!    processes per request;
//! 3. a population figure (`GET /v1/segments`) on a day not scored yet,
//!    which gathers every process's share;
//! 4. each process's peak resident memory.
//!
//! One process is the yardstick, measured in the same run. On 2 cores the
//! processes share the CPU with each other and the broker, so a layout is
//! never faster here; the figures show what fanning out costs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rapport_e2e::{Pipeline, Random, Service, Topics, event};
use serde_json::json;

const PARTITIONS: i32 = 8;
const PATIENCE: Duration = Duration::from_secs(1800);

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn at(hour: usize) -> String {
    let day = hour / 24;
    format!(
        "2026-{:02}-{:02}T{:02}:00:00Z",
        1 + (day / 28) % 12,
        1 + day % 28,
        hour % 24
    )
}

/// The customers' events, guests first.
fn population(customers: usize, random: &mut Random) -> Vec<serde_json::Value> {
    let mut guests = Vec::new();
    let mut rest = Vec::new();
    for person in 0..customers {
        let email = format!("p{person}@example.com");
        let customer = format!("c-{person}");
        if random.chance(50) {
            guests.push(event(
                "order.placed",
                &at(person % 2000),
                json!({"email": email}),
                json!({"order_id": format!("g-{person}"), "total_minor": 1500 + person % 900, "currency": "USD"}),
            ));
        }
        rest.push(event(
            "customer.registered",
            &at(2000 + person % 2000),
            json!({"customer_id": customer, "email": email}),
            json!({"name": format!("Person {person}")}),
        ));
        for order in 0..=random.below(2) as usize {
            rest.push(event(
                "order.placed",
                &at(4000 + person % 2000 + 24 * order),
                json!({"customer_id": customer}),
                json!({"order_id": format!("o-{person}-{order}"), "total_minor": 2500 + order * 100, "currency": "USD"}),
            ));
        }
    }
    guests.extend(rest);
    guests
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((fraction * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

struct Reads {
    latencies: Vec<Duration>,
    per_second: f64,
    peer_reads: i64,
}

/// `requests` reads of random customers by `clients` clients, each client
/// asking the layout's processes in turn.
fn read_customers(
    processes: &[(Service, Vec<i32>)],
    customers: usize,
    clients: usize,
    requests: usize,
) -> Reads {
    let peers_before: i64 = processes
        .iter()
        .map(|(service, _)| {
            rapport_e2e::metric_sum(&service.metrics(), "rapport_projector_peer_reads_total", "")
        })
        .sum();
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|scope| {
        let asking: Vec<_> = (0..clients)
            .map(|client| {
                let next = &next;
                scope.spawn(move || {
                    let agent = rapport_e2e::http_agent();
                    let key = rapport_e2e::bearer(&rapport_e2e::test_keys().read);
                    let mut random = Random(0x5EED ^ client as u64);
                    let mut taken = Vec::new();
                    while next.fetch_add(1, Ordering::Relaxed) < requests {
                        let (service, _) = &processes[taken.len() % processes.len()];
                        let customer = random.below(customers as u64);
                        let url = format!(
                            "http://127.0.0.1:{}/v1/customers/c-{customer}",
                            service.port
                        );
                        let asked = Instant::now();
                        let response = agent.get(&url).header("authorization", &key).call();
                        let status = response.map(|answer| answer.status().as_u16());
                        assert!(matches!(status, Ok(200)), "{url} answered {status:?}");
                        taken.push(asked.elapsed());
                    }
                    taken
                })
            })
            .collect();
        asking
            .into_iter()
            .flat_map(|asked| asked.join().expect("a reading client"))
            .collect()
    });
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let peers_after: i64 = processes
        .iter()
        .map(|(service, _)| {
            rapport_e2e::metric_sum(&service.metrics(), "rapport_projector_peer_reads_total", "")
        })
        .sum();
    Reads {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        latencies,
        peer_reads: peers_after - peers_before,
    }
}

fn main() {
    let customers = env_number("RAPPORT_CLUSTER_BENCH_CUSTOMERS", 10_000);
    let clients = env_number("RAPPORT_BENCH_CLIENTS", 4);
    let requests = env_number("RAPPORT_CLUSTER_BENCH_READS", 4_000);
    let topics = Topics::unique("cluster-bench");
    topics.create(4, PARTITIONS);
    let pipeline = Pipeline::start_on(topics, true);
    let events = population(customers, &mut Random(0xC1A5));
    let sending = Instant::now();
    for batch in events.chunks(500) {
        pipeline.send_ok(batch);
    }
    pipeline.wait_until_caught_up(PATIENCE);
    let ends = rapport_e2e::high_watermarks(&pipeline.topics.customer);
    let records: i64 = ends.values().sum();
    println!(
        "\n## Several projector processes\n\n{customers} customers, {} events, {records} customer records on {PARTITIONS} partitions (sent and resolved in {:.1} s); reads by {clients} clients, {requests} per layout\n",
        events.len(),
        sending.elapsed().as_secs_f64()
    );
    println!(
        "| processes | rebuild of the whole topic | reads p50, p99 | reads/s | reads between processes per read | first /v1/segments of a day | peak resident memory per process |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let layouts: [(&str, Vec<Vec<i32>>); 3] = [
        ("one", vec![(0..PARTITIONS).collect()]),
        ("two", vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]),
        ("three", vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7]]),
    ];
    for (name, owners) in &layouts {
        let started = Instant::now();
        let processes = Pipeline::start_layout(&pipeline, &format!("bench-{name}"), owners);
        let deadline = Instant::now() + PATIENCE;
        while !processes.iter().all(|(service, partitions)| {
            rapport_e2e::serves_whole(service, partitions, &ends, PARTITIONS as usize)
        }) {
            assert!(Instant::now() < deadline, "layout {name} did not catch up");
            std::thread::sleep(Duration::from_millis(100));
        }
        let rebuilt = started.elapsed();
        let reads = read_customers(&processes, customers, clients, requests);
        let figure = Instant::now();
        let (status, _) = rapport_e2e::get_json_with_key(
            &format!(
                "http://127.0.0.1:{}/v1/segments?as_of=2027-01-01",
                processes[0].0.port
            ),
            Some(&rapport_e2e::test_keys().read),
        );
        assert_eq!(status, 200, "segments of layout {name}");
        let figure = figure.elapsed();
        let memory: Vec<String> = processes
            .iter()
            .map(|(service, _)| format!("{} MiB", service.peak_memory_kib().unwrap_or(0) / 1024))
            .collect();
        println!(
            "| {} | {:.1} s, {:.0} records/s | {:.2} ms, {:.2} ms | {:.0} | {:.2} | {:.0} ms | {} |",
            processes.len(),
            rebuilt.as_secs_f64(),
            records as f64 / rebuilt.as_secs_f64(),
            percentile(&reads.latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&reads.latencies, 0.99).as_secs_f64() * 1e3,
            reads.per_second,
            reads.peer_reads as f64 / reads.latencies.len().max(1) as f64,
            figure.as_secs_f64() * 1e3,
            memory.join(", ")
        );
    }
    println!(
        "\nThe rebuild counts from the processes' start to every partition applied (start-up included). One process is the yardstick; on {} cores the processes and the broker share the CPU.",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
}
