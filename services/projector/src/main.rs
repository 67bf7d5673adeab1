//! `rapport-projector`: applies the customer topic to the projections and
//! serves the query API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use clap::Parser;
use rapport_common::config::{CommonArgs, override_with};
use rapport_common::metrics::Registry;
use rapport_common::status::WorkerStatus;
use rapport_common::store::Store;
use rapport_projector::apply::{ApplyMetrics, CUSTOMER_VIEW, run};
use rapport_projector::query::{QueryState, router};

/// Folds the customer topic into RocksDB projections (the unified customer
/// view) and serves the query API: /v1/customers, /v1/customers/{id},
/// /v1/customers/{id}/timeline, /v1/identity/conflicts, /healthz, /metrics.
/// State and the offsets it came from are written in one batch, so a
/// restart resumes exactly where the last write ended.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Address of the query API. Default 127.0.0.1:8081.
    #[arg(long, env = "RAPPORT_PROJECTOR_LISTEN")]
    listen: Option<SocketAddr>,
    /// Directory of the projections' RocksDB database. Default data/projector.
    #[arg(long, env = "RAPPORT_PROJECTOR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Customer-topic partitions to own, comma-separated; default all.
    #[arg(long, env = "RAPPORT_PROJECTOR_PARTITIONS", value_delimiter = ',')]
    partitions: Option<Vec<i32>>,
    /// Most records per RocksDB write batch. Default 5000.
    #[arg(long, env = "RAPPORT_PROJECTOR_MAX_BATCH")]
    max_batch: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    rapport_common::init_logging(args.common.log_json);
    let mut config = args.common.load()?;
    override_with(&mut config.projector.listen, args.listen);
    override_with(&mut config.projector.data_dir, args.data_dir);
    override_with(&mut config.projector.partitions, args.partitions);
    override_with(&mut config.projector.max_batch, args.max_batch);
    let store = Store::open(&config.projector.data_dir, &[CUSTOMER_VIEW])?;
    let registry = Registry::default();
    let metrics = ApplyMetrics::new(&registry, CUSTOMER_VIEW);
    let stop = Arc::new(AtomicBool::new(false));
    let status = WorkerStatus::new(&config.topics.customer);
    let worker = {
        let (config, store, stop, status) =
            (config.clone(), store.clone(), stop.clone(), status.clone());
        std::thread::Builder::new()
            .name("projector-apply".into())
            .spawn(move || run(&config, &store, CUSTOMER_VIEW, stop, metrics, status))?
    };
    let app = router(Arc::new(QueryState {
        store,
        family: CUSTOMER_VIEW.to_owned(),
        status,
        registry,
    }));
    let listener = tokio::net::TcpListener::bind(config.projector.listen)
        .await
        .with_context(|| format!("binding {}", config.projector.listen))?;
    tracing::info!(listen = %config.projector.listen, data_dir = %config.projector.data_dir.display(), "projector and query API ready");

    rapport_common::serve_beside_worker(listener, app, stop, worker)
        .await
        .map_err(anyhow::Error::msg)
        .context("projector failed")?;
    tracing::info!("projector stopped");
    Ok(())
}
