//! Plumbing shared by the Rapport services: configuration, Kafka clients,
//! RocksDB storage and its key scheme, metrics, HTTP errors and logging.

pub mod admin;
pub mod apikeys;
pub mod broker;
pub mod config;
pub mod digest;
pub mod follow;
pub mod http;
pub mod kafka;
pub mod keys;
pub mod merge;
pub mod metrics;
pub mod openapi;
pub mod partitioning;
pub mod privacy;
pub mod read_all;
pub mod status;
pub mod store;
pub mod topics;
pub mod vault_client;
pub mod worker;

/// Errors of the shared plumbing. `Display` says what failed and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("kafka: {context}: {source}")]
    Kafka {
        context: String,
        source: rdkafka::error::KafkaError,
    },
    #[error("topic {0} does not exist; create it with `rapportctl topics create`")]
    MissingTopic(String),
    #[error("storage: {context}: {source}")]
    Storage {
        context: String,
        source: rocksdb::Error,
    },
    #[error("storage: column family {0} is missing")]
    MissingColumnFamily(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("stored state: {0}")]
    State(#[from] rapport_projections::Error),
    #[error("stored state: a profile delta holding a customer record does not decode: {0}")]
    RecordDelta(prost::DecodeError),
    /// Another process holding part of the answer could not be asked;
    /// asking again later may work (503).
    #[error("{0}")]
    Unavailable(String),
    #[error("malformed record at {topic}/{partition}@{offset}: {reason}")]
    MalformedRecord {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Starts structured logging: text by default, JSON lines with `json`.
/// `RUST_LOG` filters as usual (default `info`).
pub fn init_logging(json: bool) {
    init_logging_filtered(json, "info");
}

/// Like [`init_logging`] with another default filter, for tools whose
/// output is for people (`rapportctl` hides librdkafka's retry chatter).
pub fn init_logging_filtered(json: bool, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

/// Milliseconds since the Unix epoch by the wall clock. Services use it to
/// stamp what they receive; folds never call it.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// Serves `app` until Ctrl-C or SIGTERM while `worker` (a blocking loop on
/// its own thread that watches `stop`) runs beside it. On a signal the
/// worker is asked to stop and awaited, so its last batch is committed;
/// if the worker ends first (it only does on an error), serving ends too.
pub async fn serve_beside_worker(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    worker: std::thread::JoinHandle<Result<()>>,
) -> std::result::Result<(), String> {
    let finished = tokio::task::spawn_blocking(move || worker.join());
    tokio::pin!(finished);
    let outcome = tokio::select! {
        served = axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).with_graceful_shutdown(shutdown_signal()) => {
            served.map_err(|error| format!("serving HTTP: {error}"))?;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!("stopping after the current batch");
            (&mut finished).await
        }
        outcome = &mut finished => outcome,
    };
    match outcome {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(error))) => Err(error.to_string()),
        _ => Err("the worker thread panicked".to_owned()),
    }
}
