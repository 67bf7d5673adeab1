//! `rapport-projector`: applies the customer topic to the projections and
//! serves the query API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use rapport_common::config::{CommonArgs, Sealing, override_with};
use rapport_common::metrics::Registry;
use rapport_common::store::{Merging, Store, Tuning};
use rapport_projector::cluster::Cluster;
use rapport_projector::query::QueryState;
use rapport_projector::router::router;
use rapport_projector::versions::{META, Versions};

/// The folding thread allocates and frees many small values per record
/// (decoded records, deltas, timeline entries) and frees each batch after
/// the commit thread read it; with glibc's malloc that was a fifth of a
/// rebuild's CPU, and more in a long-running process (measured with
/// `make bench`, see docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long start-up waits for identity's vault to answer.
const VAULT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

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
    /// Processes owning some partitions each find one another on the
    /// projectors topic, and each answers for every person. Once
    /// `rapportctl partitions move` changed what this process owns, the
    /// set kept in its data directory wins.
    #[arg(long, env = "RAPPORT_PROJECTOR_PARTITIONS", value_delimiter = ',')]
    partitions: Option<Vec<i32>>,
    /// Where the other projectors reach this one's query API, e.g.
    /// http://10.0.0.2:8081. Default http:// and --listen.
    #[arg(long, env = "RAPPORT_PROJECTOR_URL")]
    url: Option<String>,
    /// Most records per RocksDB write batch (the batch size while behind,
    /// as in a rebuild). Default 20000.
    #[arg(long, env = "RAPPORT_PROJECTOR_MAX_BATCH")]
    max_batch: Option<usize>,
    /// Bytes of a projection's RocksDB memtable before it is flushed to a
    /// file; also what a crash makes a projection fold again (projections
    /// skip RocksDB's write-ahead log). Default 67108864 (64 MiB).
    #[arg(long, env = "RAPPORT_PROJECTOR_MEMTABLE_BYTES")]
    memtable_bytes: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    rapport_common::init_logging(args.common.log_json);
    let mut config = args.common.load()?;
    override_with(&mut config.projector.listen, args.listen);
    override_with(&mut config.projector.data_dir, args.data_dir);
    override_with(&mut config.projector.partitions, args.partitions);
    override_with(&mut config.projector.url, args.url.map(Some));
    override_with(&mut config.projector.max_batch, args.max_batch);
    override_with(&mut config.projector.memtable_bytes, args.memtable_bytes);
    config.validate()?;
    let tuning = Tuning {
        // Projections are appended to and rebuilt, not read on every write.
        merging: Merging::Late,
        memtable_bytes: Some(config.projector.memtable_bytes),
    };
    let store = Store::open_tuned(&config.projector.data_dir, &[META], tuning)?;
    // Partitions moved here or away by an operator stay so after a restart.
    if let Some(stored) = Versions::stored_partitions(&store)? {
        if stored != config.projector.partitions {
            tracing::info!(partitions = ?stored, configured = ?config.projector.partitions, "owning the partitions last set by `rapportctl partitions move`, not the configured ones");
        }
        config.projector.partitions = stored;
    }
    let registry = Registry::default();
    // Keys first: a worker started before them would fold while the API
    // cannot answer yet.
    let gate = {
        let (config, metrics) = (config.clone(), registry.clone());
        tokio::task::spawn_blocking(move || {
            rapport_common::apikeys::start_gate(&config, &metrics, "projector")
        })
        .await??
    };
    // The vault too: answers hold sealed tokens that only its keys open.
    let vault = match config.privacy.sealing {
        Sealing::On => {
            let privacy = config.privacy.clone();
            let vault = tokio::task::spawn_blocking(move || privacy.vault(VAULT_PATIENCE))
                .await?
                .context("connecting to the vault")?;
            Some(Arc::new(vault))
        }
        Sealing::Off => {
            tracing::warn!(
                "sealing is off: answers are shown as stored and lookups use clear identifiers"
            );
            None
        }
    };
    // The other projector processes, before the workers and requests: a
    // read of a person whose profiles they hold goes to them.
    let cluster = {
        let (config, registry) = (config.clone(), registry.clone());
        tokio::task::spawn_blocking(move || Cluster::start(&config, &registry)).await??
    };
    let versions = Versions::start(config.clone(), store, registry.clone())?;
    cluster.announce_from(versions.clone())?;
    let mut query = QueryState::new(versions.clone(), registry, config.analytics.clone())
        .with_cluster(cluster.clone());
    if let Some(vault) = vault {
        query = query.with_vault(vault);
    }
    let query = Arc::new(query);
    // Read back before any request and before the workers apply much: an
    // image is only used while nothing was applied after it.
    query.restore_scoreboards()?;
    let app =
        router(query.clone(), &gate).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let listener = tokio::net::TcpListener::bind(config.projector.listen)
        .await
        .with_context(|| format!("binding {}", config.projector.listen))?;
    tracing::info!(listen = %config.projector.listen, data_dir = %config.projector.data_dir.display(), live = %versions.live(), "projector and query API ready");

    // A version's worker only stops on its own when it failed (or when a
    // bounded rebuild reached its end, which is not a failure).
    let failed = {
        let versions = versions.clone();
        async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                if let Some(error) = versions.failure() {
                    return error;
                }
            }
        }
    };
    let outcome = tokio::select! {
        served = axum::serve(listener, app).with_graceful_shutdown(rapport_common::shutdown_signal()) => served.map_err(anyhow::Error::from),
        error = failed => Err(anyhow::anyhow!(error)),
    };
    // No longer answering: the others stop routing reads here at once.
    tokio::task::spawn_blocking(move || cluster.leave()).await?;
    tracing::info!("stopping after the current batches");
    let stopping = versions.clone();
    tokio::task::spawn_blocking(move || stopping.stop_all()).await?;
    // With the workers stopped the scoreboards hold every applied batch:
    // kept on disk, the next start reads them back instead of scoring
    // everyone again.
    let saved = tokio::task::spawn_blocking(move || query.save_scoreboards()).await?;
    if let Err(error) = saved {
        tracing::warn!(%error, "could not write the scoreboards' images; the next start scans");
    }
    outcome.context("projector failed")?;
    tracing::info!("projector stopped");
    Ok(())
}
