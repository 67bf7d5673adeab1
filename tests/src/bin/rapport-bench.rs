//! `rapport-bench`: throughput and latency of the backbone on this machine,
//! against the broker `make bench` starts. Prints a table; asserts nothing.
//!
//! 1. ingest: events/s through `POST /v1/events` (batches of 500, several
//!    clients) until the broker acknowledged them, next to a plain rdkafka
//!    producer sending the same records with the same settings;
//! 2. projector: events/s folding the whole customer topic into RocksDB from
//!    an empty state;
//! 3. query: p50/p99 latency of `GET /v1/customers/{id}` with several clients
//!    while ingest traffic keeps flowing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prost::Message as _;
use rapport_e2e::{Pipeline, create_topics, event, get_json, http_agent, metric_sum};
use serde_json::{Value, json};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn generate(events: usize, customers: usize) -> Vec<Value> {
    (0..events)
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

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

fn main() {
    let total = env_number("RAPPORT_BENCH_EVENTS", 100_000);
    let customers = env_number("RAPPORT_BENCH_CUSTOMERS", 5_000);
    let clients = env_number("RAPPORT_BENCH_CLIENTS", 4);
    let batch_size = 500;
    println!(
        "rapport-bench: {total} events, {customers} customers, {clients} HTTP clients, batches of {batch_size}"
    );

    let pipeline = Pipeline::start("bench");
    let events = generate(total, customers);
    let batches: Vec<Vec<Value>> = events.chunks(batch_size).map(<[Value]>::to_vec).collect();

    // 1a. Through ingest.
    let started = Instant::now();
    std::thread::scope(|scope| {
        for client in 0..clients {
            let (batches, pipeline) = (&batches, &pipeline);
            scope.spawn(move || {
                for batch in batches.iter().skip(client).step_by(clients) {
                    pipeline.send_ok(batch);
                }
            });
        }
    });
    let ingest_elapsed = started.elapsed();
    let ingest_rate = total as f64 / ingest_elapsed.as_secs_f64();

    // 1b. The same records straight from rdkafka, same producer settings.
    let copy_topic = format!("{}.producer-baseline", pipeline.topics.raw);
    create_topics(&[(&copy_topic, 4)]);
    let mut errors = Vec::new();
    let records: Vec<(String, Vec<u8>)> = events
        .iter()
        .enumerate()
        .map(|(index, value)| {
            let mut event = rapport_ingest::validate::event_from_json(index, value, &mut errors);
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
    let kafka = rapport_common::config::KafkaConfig {
        brokers: rapport_e2e::brokers(),
        properties: Default::default(),
    };
    let (producer, _) = rapport_common::kafka::producer(
        &kafka,
        "rapport-bench",
        Some(Duration::from_secs(30)),
        1_000_000,
    )
    .expect("producer");
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
    let producer_elapsed = started.elapsed();
    let producer_rate = total as f64 / producer_elapsed.as_secs_f64();

    // 2. A fresh projector over the whole customer topic.
    pipeline.wait_until_caught_up(Duration::from_secs(600));
    let customer_records: i64 = rapport_e2e::high_watermarks(&pipeline.topics.customer)
        .values()
        .sum();
    let rebuild = Pipeline::start_projector_only(&pipeline);
    let started = Instant::now();
    rapport_e2e::wait_for(
        "the fresh projector to apply the customer topic",
        Duration::from_secs(900),
        || {
            let applied = metric_sum(
                &rebuild.metrics(),
                "rapport_projector_records_total",
                "outcome=",
            );
            applied >= customer_records
        },
    );
    let projector_elapsed = started.elapsed();
    let projector_rate = customer_records as f64 / projector_elapsed.as_secs_f64();

    // 2b. A rebuild beside the live version through rapportctl, against a
    // plain rdkafka consumer reading the same topic: the rebuild should be
    // limited by how fast the broker serves records, not by the fold.
    let started = Instant::now();
    let mut consumed = 0u64;
    {
        let (consumer, _) =
            rapport_common::kafka::assigning_consumer(&kafka, "rapport-bench-read", true)
                .expect("consumer");
        let partitions = rapport_common::kafka::partition_count(
            &consumer,
            &pipeline.topics.customer,
            Duration::from_secs(10),
        )
        .expect("partitions");
        let starts: Vec<_> = (0..partitions)
            .map(|partition| (partition, rdkafka::Offset::Beginning))
            .collect();
        rapport_common::kafka::assign(&consumer, &pipeline.topics.customer, &starts)
            .expect("assign");
        let mut at_end = std::collections::BTreeSet::new();
        while (at_end.len() as i32) < partitions {
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(_)) => consumed += 1,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                    at_end.insert(partition);
                }
                _ => {}
            }
        }
    }
    let read_elapsed = started.elapsed();
    let read_rate = consumed as f64 / read_elapsed.as_secs_f64();
    let started = Instant::now();
    let replayed = pipeline.rapportctl(&["replay", "customer_view", "--version", "bench"]);
    let replay_elapsed = started.elapsed();
    assert!(replayed.contains("caught up"), "{replayed}");
    let replay_rate = customer_records as f64 / replay_elapsed.as_secs_f64();
    let peak_kib = pipeline.projector.peak_memory_kib().unwrap_or(0);

    // 3. Query latency under load: ingest keeps sending while clients read.
    let stop = Arc::new(AtomicBool::new(false));
    let background = {
        let (stop, batches, url) = (stop.clone(), batches.clone(), pipeline.ingest_url());
        std::thread::spawn(move || {
            let agent = http_agent();
            for batch in batches.iter().cycle() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // Fresh event ids, so the load is real work and not duplicates.
                let fresh: Vec<Value> = batch
                    .iter()
                    .map(|event| {
                        let mut event = event.clone();
                        event["event_id"] = json!(rapport_e2e::event_id());
                        event
                    })
                    .collect();
                let body = serde_json::to_vec(&json!({ "events": fresh })).expect("json");
                let _ = agent
                    .post(&format!("{url}/v1/events"))
                    .header("content-type", "application/json")
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
        "| projector, customer topic into RocksDB from empty | {projector_rate:.0} records/s ({customer_records} in {:.1} s) |",
        projector_elapsed.as_secs_f64()
    );
    println!(
        "| plain rdkafka consumer reading the customer topic | {read_rate:.0} records/s ({consumed} in {:.1} s) |",
        read_elapsed.as_secs_f64()
    );
    println!(
        "| `rapportctl replay` beside the live version, to caught up | {replay_rate:.0} records/s ({customer_records} in {:.1} s), {:.2} of the plain read rate |",
        replay_elapsed.as_secs_f64(),
        replay_rate / read_rate
    );
    println!(
        "| projector peak resident memory (live + rebuild) | {} MiB |",
        peak_kib / 1024
    );
    println!(
        "| GET /v1/customers/{{id}}, {clients} clients, ingest running | p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} requests |",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        latencies.len()
    );
}
