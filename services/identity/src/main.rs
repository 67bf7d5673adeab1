//! `rapport-identity`: resolves raw events to canonical customers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use clap::Parser;
use rapport_common::config::{CommonArgs, override_with};
use rapport_common::metrics::Registry;
use rapport_common::status::WorkerStatus;
use rapport_common::store::{Merging, Store, Tuning};
use rapport_identity::admin::{AdminState, router};
use rapport_identity::versions::{Versions, baselines_dir};
use rapport_identity::{FAMILY, IdentityMetrics, run};

/// The only writer of the identifier graph. Reads the raw topic in ingest
/// order, drops repeated event ids, resolves every event to a canonical
/// customer id and produces it, keyed by that id, to the customer topic.
/// Serves /healthz, /metrics and the admin endpoints under /v1/admin/
/// (status, and re-identification into graph versions).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Address for /healthz, /metrics and /v1/admin/. Default 127.0.0.1:8082.
    #[arg(long, env = "RAPPORT_IDENTITY_LISTEN")]
    listen: Option<SocketAddr>,
    /// Directory of the graph's RocksDB database. Default data/identity.
    /// Baselines of graph versions go beside it, in <DIR>.baselines.
    #[arg(long, env = "RAPPORT_IDENTITY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Directory of the vault (data keys and the pseudonym key), the one
    /// store the log cannot rebuild. Default data/vault.
    #[arg(long, env = "RAPPORT_IDENTITY_VAULT_DIR")]
    vault_dir: Option<PathBuf>,
    /// Milliseconds a record waits for earlier records on idle partitions
    /// before it is resolved. Default 200.
    #[arg(long, env = "RAPPORT_IDENTITY_REORDER_GRACE_MS")]
    reorder_grace_ms: Option<u64>,
    /// Bytes of the graph's RocksDB memtable before it is flushed to a
    /// file. Default 67108864 (64 MiB).
    #[arg(long, env = "RAPPORT_IDENTITY_MEMTABLE_BYTES")]
    memtable_bytes: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    rapport_common::init_logging(args.common.log_json);
    let mut config = args.common.load()?;
    override_with(&mut config.identity.listen, args.listen);
    override_with(&mut config.identity.data_dir, args.data_dir);
    override_with(&mut config.identity.vault_dir, args.vault_dir);
    override_with(&mut config.identity.reorder_grace_ms, args.reorder_grace_ms);
    override_with(&mut config.identity.memtable_bytes, args.memtable_bytes);
    config.validate()?;
    let tuning = Tuning {
        merging: Merging::Early,
        memtable_bytes: Some(config.identity.memtable_bytes),
    };
    let store = Store::open_tuned(&config.identity.data_dir, &[FAMILY], tuning)?;
    let vault = Arc::new(
        rapport_identity::vault::Vault::open(&config.identity.vault_dir).with_context(|| {
            format!(
                "opening the vault at {}",
                config.identity.vault_dir.display()
            )
        })?,
    );
    let erasures = Arc::new(rapport_identity::erasure::Erasures::open(
        store.clone(),
        vault.clone(),
    )?);
    let resumed = erasures.resume(&rapport_common::now_ms)?;
    if resumed > 0 {
        tracing::info!(resumed, "completed erasures a stop had interrupted");
    }
    let registry = Registry::default();
    let metrics = IdentityMetrics::new(&registry);
    // Keys first: a worker started before them would resolve while the API
    // cannot answer yet.
    let gate = {
        let (config, metrics) = (config.clone(), registry.clone());
        tokio::task::spawn_blocking(move || {
            rapport_common::apikeys::start_gate(&config, &metrics, "identity")
        })
        .await??
    };

    let stop = Arc::new(AtomicBool::new(false));

    let status = WorkerStatus::new(&config.topics.raw);
    let versions = Versions::start(
        config.clone(),
        store.clone(),
        baselines_dir(&config.identity.data_dir),
        erasures.generations(),
    )?;
    let worker = {
        let (config, store, stop, status) =
            (config.clone(), store.clone(), stop.clone(), status.clone());
        let generations = erasures.generations();
        std::thread::Builder::new()
            .name("identity-resolve".into())
            .spawn(move || run(&config, &store, generations, stop, metrics, status))?
    };
    let app = router(
        Arc::new(AdminState {
            versions: versions.clone(),
            store: store.clone(),
            status,
            metrics: registry,
            vault,
            erasures,
        }),
        &gate,
    );
    let listener = tokio::net::TcpListener::bind(config.identity.listen)
        .await
        .with_context(|| format!("binding {}", config.identity.listen))?;
    tracing::info!(listen = %config.identity.listen, data_dir = %config.identity.data_dir.display(), "identity ready");

    let served = rapport_common::serve_beside_worker(listener, app, stop, worker).await;
    tokio::task::spawn_blocking(move || versions.stop_all()).await?;
    served
        .map_err(anyhow::Error::msg)
        .context("identity failed")?;
    tracing::info!("identity stopped");
    Ok(())
}
