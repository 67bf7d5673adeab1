//! `rapport-ingest`: the HTTP front door for storefront events.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use rapport_common::config::{CommonArgs, Sealing, override_with};
use rapport_common::metrics::Registry;
use rapport_ingest::segment::TrackingSettings;
use rapport_ingest::{Ingest, KafkaSink, router};

/// Accepts storefront events over HTTP and produces them to the raw topic:
/// `POST /v1/events` (JSON or protobuf), and Segment's tracking API
/// (`POST /v1/batch` and the rest, analytics.js served for browsers; see
/// docs/segment.md). Answers only after the broker acknowledged every
/// event; 400 names the bad field and produces nothing; 503 with
/// Retry-After when the broker is unreachable or the queue is full.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Address to listen on. Default 127.0.0.1:8080.
    #[arg(long, env = "RAPPORT_INGEST_LISTEN")]
    listen: Option<SocketAddr>,
    /// How long a produce may wait for the broker before the request gets 503,
    /// in milliseconds. Default 5000.
    #[arg(long, env = "RAPPORT_INGEST_DELIVERY_TIMEOUT_MS")]
    delivery_timeout_ms: Option<u64>,
}

/// How long ingest waits at start for the vault (on identity) to answer.
const VAULT_PATIENCE: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    rapport_common::init_logging(args.common.log_json);
    let mut config = args.common.load()?;
    override_with(&mut config.ingest.listen, args.listen);
    override_with(
        &mut config.ingest.delivery_timeout_ms,
        args.delivery_timeout_ms,
    );
    config.validate()?;
    let delivery_timeout = Duration::from_millis(config.ingest.delivery_timeout_ms.max(1));
    let (producer, health) = rapport_common::kafka::producer(
        &config.kafka,
        "rapport-ingest",
        Some(delivery_timeout),
        config.ingest.max_queued_events,
    )?;
    let sink = {
        let (kafka, shared_health, max_queued) = (
            config.kafka.clone(),
            health.clone(),
            config.ingest.max_queued_events,
        );
        let renew = move || {
            rapport_common::kafka::producer_reporting_to(
                &kafka,
                "rapport-ingest",
                Some(delivery_timeout),
                max_queued,
                shared_health.clone(),
            )
        };
        KafkaSink::new(
            producer.clone(),
            health.clone(),
            config.topics.raw.clone(),
            Box::new(renew),
            delivery_timeout,
        )
    };
    rapport_common::kafka::watch_reconnection(&producer, health);
    let metrics = Registry::default();
    let gate = {
        let (config, metrics) = (config.clone(), metrics.clone());
        tokio::task::spawn_blocking(move || {
            rapport_common::apikeys::start_gate(&config, &metrics, "ingest")
        })
        .await??
    };
    let mut ingest = Ingest::new(
        sink,
        format!("ingest@{}", config.ingest.listen),
        metrics,
        config.ingest.max_in_flight_requests,
    )
    .with_body_read_timeout(Duration::from_millis(config.ingest.body_read_timeout_ms))
    .with_tracking(TrackingSettings {
        public_url: config.ingest.public_url.clone(),
        allowed_origins: config.ingest.allowed_origins.clone(),
    });
    match config.privacy.sealing {
        Sealing::On => {
            let privacy = config.privacy.clone();
            let vault =
                tokio::task::spawn_blocking(move || privacy.vault(VAULT_PATIENCE)).await??;
            ingest = ingest.with_sealing(Arc::new(vault));
        }
        Sealing::Off => tracing::warn!(
            "privacy.sealing = \"off\": personal fields go to the log in clear and no erasure can reach them"
        ),
    }
    let ingest = Arc::new(ingest);

    let listener = tokio::net::TcpListener::bind(config.ingest.listen)
        .await
        .with_context(|| format!("binding {}", config.ingest.listen))?;
    tracing::info!(listen = %config.ingest.listen, brokers = %config.kafka.brokers, topic = %config.topics.raw, "ingest ready");
    axum::serve(
        listener,
        router(ingest, &gate).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(rapport_common::shutdown_signal())
    .await?;
    // Whatever was acknowledged is on the broker; flush what is still queued.
    use rdkafka::producer::Producer as _;
    let _ = producer.flush(Duration::from_secs(5));
    tracing::info!("ingest stopped");
    Ok(())
}
