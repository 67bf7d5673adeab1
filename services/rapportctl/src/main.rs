//! `rapportctl`: operating a Rapport deployment from the command line. This
//! file reads the command line and hands each command to its module.

mod client;
mod dead_letters;
mod erase;
mod import;
mod keys;
mod partitions;
mod progress;
mod reidentify;
mod replay;
mod status;
mod topics;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rapport_common::config::CommonArgs;

use crate::client::Services;
use crate::reidentify::Reidentify;

/// How long `status` waits for each service.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long other commands wait for one admin answer.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Operate a Rapport deployment: see where every service stands, rebuild
/// projections and the identifier graph beside the live ones and compare
/// them, inspect and re-submit dead letters, create and inspect topics,
/// make and revoke API keys.
///
/// Kafka commands (topics, deadletters, keys) talk to the brokers named by
/// --brokers (or RAPPORT_BROKERS, or [kafka] brokers in --config), default
/// 127.0.0.1:9092. The others ask the services' admin endpoints at
/// --query-url (the projector) and --identity-url, with the admin key given
/// by --key (or RAPPORT_KEY).
#[derive(Parser, Debug)]
#[command(version, name = "rapportctl")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Base URL of the projector's query API, whose /v1/admin endpoints
    /// status, replay, switch, drop and verify use.
    #[arg(
        long,
        env = "RAPPORT_QUERY_URL",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    query_url: String,
    /// Base URL of the identity service's admin API, which status,
    /// reidentify and replay --identity-version use.
    #[arg(
        long,
        visible_alias = "identity",
        env = "RAPPORT_IDENTITY_URL",
        default_value = "http://127.0.0.1:8082",
        global = true
    )]
    identity_url: String,
    /// API key sent to the services' admin endpoints, as `Authorization:
    /// Bearer <key>`; they need an admin key. `make run` keeps one in
    /// ./data/keys.env (RAPPORT_ADMIN_KEY); `rapportctl keys create --kind
    /// admin` makes another. Not needed by the Kafka commands.
    #[arg(long, env = "RAPPORT_KEY", hide_env_values = true, global = true)]
    key: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum PartitionsAction {
    /// Move PARTITION to the projector at --to.
    Move {
        /// The customer-topic partition to move.
        partition: i32,
        /// The base URL of the projector that takes it on, as it announces
        /// itself (its `[projector] url`, see `rapportctl status`).
        #[arg(long, value_name = "URL")]
        to: String,
        /// How long to wait for the replay before giving up (the new owner
        /// keeps replaying, the old ones keep answering; run the move again
        /// to wait on).
        #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
        patience_s: u64,
    },
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Per service and projection: applied offset and log end per partition,
    /// lag, events/s, state size on disk, the bytes RocksDB's compactions
    /// still have to rewrite ("to compact": they run behind the fold, at a
    /// lower priority, and catch up once a rebuild has) and the last error.
    Status {
        /// Print the raw JSON the services answered, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a projection into a new version from the customer topic while
    /// the live version keeps serving. Shows progress until the rebuild has
    /// caught up with the head (or, with --until, reached its end).
    ///
    /// With --identity-version NAME the version is built from the customer
    /// topic that `rapportctl reidentify --version NAME` wrote instead, to
    /// see (and `verify`) the projection under that graph beside the live one.
    Replay {
        /// The projection to rebuild: customer_view.
        projection: String,
        /// Name of the new version; default the next free vN.
        #[arg(long)]
        version: Option<String>,
        /// Where to start: beginning, offset:PARTITION:OFFSET or time:RFC3339.
        /// With time:T the version holds exactly the records received at or
        /// after T: each partition is sought (the broker's offset-for-time
        /// lookup, checked against the records around it, else a binary
        /// search), not read from its beginning.
        #[arg(long, default_value = "beginning")]
        from: String,
        /// A bounded snapshot: only records ingest received at or before
        /// time:RFC3339. Query it with ?version=; it never follows the head.
        #[arg(long)]
        until: Option<String>,
        /// Make the new version live once it has caught up. Not with
        /// --identity-version: verify such a version first, then switch it
        /// with `rapportctl switch NAME --follow-other-topic`.
        #[arg(long, conflicts_with = "identity_version")]
        switch: bool,
        /// Build from the customer topic of the graph version NAME (made by
        /// `rapportctl reidentify --version NAME`; identity names the topic,
        /// <customer topic>.NAME) instead of the live customer topic. The
        /// version keeps reading that topic, which stops growing once the
        /// graph version reached its bounds; dropping the graph version
        /// deletes the topic, and this version's worker then reports an
        /// error (what it built stays queryable until `rapportctl drop`).
        #[arg(long, value_name = "NAME")]
        identity_version: Option<String>,
        /// Start the rebuild and return without waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Make a version live: queries without ?version= read it from now on.
    Switch {
        /// The version to make live, as `rapportctl status` lists it.
        version: String,
        /// Needed to make live a version built with --identity-version: it
        /// keeps reading its own topic, not the live customer topic, so
        /// queries then see only what is written there (a re-identification
        /// writes up to its bounds and no further).
        #[arg(long)]
        follow_other_topic: bool,
    },
    /// Hand a partition of the customer topic from the projector processes
    /// owning it to another one (a machine added), with every read whole
    /// throughout.
    ///
    /// The projector at --to takes the partition on and replays it from
    /// the log while the old owners go on answering for it; once it has read
    /// the partition to its end, each old owner gives it up (it stops
    /// announcing it at once and stops applying it two seconds later, when
    /// every process routes its reads to the new owner). Shows the replay's
    /// progress. The old owners are found from the projectors topic; the
    /// move holds across restarts of either side.
    Partitions {
        #[command(subcommand)]
        action: PartitionsAction,
    },
    /// Stop a version's worker and delete its state (not the live version).
    Drop {
        /// The version to delete, as `rapportctl status` lists it.
        version: String,
    },
    /// Compare the live version with another at the same offsets: checksums
    /// of their state and the first keys that differ. Fails if they differ.
    Verify {
        /// The projection: customer_view.
        projection: String,
        /// The version to compare with the live one.
        #[arg(long)]
        other: String,
        /// How long to wait for both versions to reach the same offsets.
        #[arg(long, default_value_t = 120, value_name = "SECONDS")]
        patience_s: u64,
    },
    /// Erase a person: every identifier identity has linked to them, every
    /// profile merged into them. Their data keys are destroyed in the vault,
    /// so their personal fields read [erased] on every topic and in every
    /// projection, rebuilt or not; their orders stay, so revenue and
    /// segment sizes do not change. Needs an admin key. Prints the
    /// erasure's id; `--show ID` reports it again.
    Erase {
        /// The person's customer id, email or phone (read as an email when
        /// it has an @, a phone when it starts with +, else a customer id).
        value: Option<String>,
        /// Which identifier VALUE is, where the guess would be wrong.
        #[arg(long, value_parser = ["customer_id", "email", "phone", "anonymous_id"])]
        kind: Option<String>,
        /// Show erasure ID instead of erasing.
        #[arg(long, value_name = "ID", conflicts_with_all = ["value", "kind"])]
        show: Option<String>,
    },
    /// Re-run identity resolution from the raw topic into a new version of
    /// the identifier graph and of the customer topic, beside the live ones,
    /// then compare the new graph with the live one.
    ///
    /// The new version reads exactly the raw records the live graph had
    /// resolved when it started (the live committed offsets, frozen with a
    /// checkpoint of the live graph), in the same order, so the comparison is
    /// exact while live traffic goes on. Its records go to
    /// <customer topic>.<NAME>, created with the customer topic's partitions.
    /// Shows progress until the version finished, then prints both
    /// checksums and "equal", or "different" with the first differing keys
    /// and a non-zero exit code.
    Reidentify {
        /// Name of the new version: 1-64 letters, digits, - or _, not v1
        /// (the live graph). Default: the next free vN.
        #[arg(long, value_name = "NAME")]
        version: Option<String>,
        /// Start the re-identification and return at once, without waiting
        /// or comparing (compare later with --compare NAME).
        #[arg(long)]
        no_wait: bool,
        /// Start nothing: wait until the existing version NAME finished and
        /// compare its graph with the live one.
        #[arg(long, value_name = "NAME", conflicts_with_all = ["version", "no_wait", "drop"])]
        compare: Option<String>,
        /// Start nothing: stop the version NAME and delete its graph, its
        /// baseline and its customer topic.
        #[arg(long, value_name = "NAME", conflicts_with_all = ["version", "no_wait"])]
        drop: Option<String>,
        /// How long to wait for the version to finish before giving up
        /// (the version keeps running; compare it later with --compare).
        #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
        patience_s: u64,
    },
    /// Load a shop's history from a CSV file: orders (one row per order,
    /// as order.placed events), order-lines (one row per line item, an
    /// order's lines one after another, as in the UCI Online Retail data
    /// set) or customers (one row per customer, as customer.registered
    /// events), through ingest like any event.
    ///
    /// Columns are found by their header names, in any order, case, spaces
    /// and underscores aside (see docs/operating.md). Orders: order_id,
    /// occurred_at, total (in major units, e.g. 12.50) or total_minor,
    /// currency, and at least one of customer_id, email, phone. Order lines:
    /// order_id (InvoiceNo), occurred_at (InvoiceDate), sku (StockCode),
    /// quantity, unit_price (UnitPrice) or unit_price_minor, currency, and
    /// customer_id (CustomerID), email or phone; the lines of one invoice
    /// become one order, and a cancellation (an invoice number starting with
    /// C, negative quantities) refunds the customer's earlier orders of those
    /// stock codes. Customers: occurred_at, at least one of customer_id,
    /// email, phone, and name, city; other columns become attributes.
    ///
    /// Dates are RFC 3339, YYYY-MM-DD or YYYY-MM-DD HH:MM[:SS], or with
    /// slashes (M/D/YYYY H:MM or D/M/YYYY H:MM) when the file settles which
    /// comes first or --date-order says; dates without an offset are UTC
    /// unless --utc-offset.
    ///
    /// Each row is checked with ingest's own rules first; refused rows go to
    /// a rejects file with their line and the reason, and the rest is sent.
    /// Event ids come from the rows, so running an import again sends the
    /// same events and the log counts each once. Progress is recorded in
    /// FILE.import-state; after a failure, a kill or Ctrl-C, --resume skips
    /// the rows ingest had acknowledged. Needs a write or admin key (--key
    /// or RAPPORT_KEY).
    Import {
        /// `orders`, `order-lines` or `customers`.
        #[arg(value_parser = ["orders", "order-lines", "customers"])]
        what: String,
        /// The CSV file, with a header row.
        file: PathBuf,
        /// Base URL of ingest.
        #[arg(
            long,
            env = "RAPPORT_INGEST_URL",
            default_value = "http://127.0.0.1:8080"
        )]
        ingest_url: String,
        /// Check every row and report, sending nothing.
        #[arg(long, conflicts_with = "resume")]
        dry_run: bool,
        /// Continue an import that stopped: skip the rows that the
        /// checkpoint FILE.import-state says ingest acknowledged (or that
        /// were refused), and append to the rejects file. Refused if FILE or
        /// the settings changed since; without a checkpoint, starts at the
        /// first row.
        #[arg(long)]
        resume: bool,
        /// Where refused rows go (default: FILE's name with .rejects.csv).
        #[arg(long, value_name = "FILE")]
        rejects: Option<PathBuf>,
        /// Events per request to ingest (1-1000).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..=1000))]
        batch: u16,
        /// Batches in flight at once (1-16).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=16))]
        parallel: u8,
        /// The currency of orders when the file has no currency column.
        #[arg(long, value_name = "ISO 4217")]
        currency: Option<String>,
        /// The channel imported events are recorded on where the file has no
        /// channel column (web, app, email, phone, sms, store, chat or
        /// other); default: the event type's own (web).
        #[arg(long)]
        channel: Option<String>,
        /// How to read dates with slashes: mdy (12/1/2010 is 1 December) or
        /// dmy (1 December is 1/12/2010). Default: the order the file's own
        /// dates prove (a 13 or more in the first or second place); a file
        /// whose slash dates could be either is refused before anything is
        /// sent.
        #[arg(long, value_parser = ["mdy", "dmy"])]
        date_order: Option<String>,
        /// The UTC offset of dates that do not give one, such as +01:00 or
        /// -05:00 (one offset for the whole file: no daylight saving).
        #[arg(
            long,
            default_value = "Z",
            value_name = "±HH:MM",
            value_parser = import::parse_utc_offset,
            allow_hyphen_values = true
        )]
        utc_offset: i32,
    },
    /// Records the services refused, kept on the dead-letter topic.
    Deadletters {
        #[command(subcommand)]
        action: DeadLettersAction,
    },
    /// Create or describe the topics defined in infra/topics.toml.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Make, list and revoke API keys.
    ///
    /// Every route but /healthz needs a key, sent as `Authorization: Bearer
    /// <key>`. A key has one kind:
    ///
    /// write: posts events only (POST /v1/events); safe to ship in a
    /// storefront or an app.
    ///
    /// read: customers, timelines, scores, models, segments, exports and
    /// /metrics.
    ///
    /// admin: everything, including /v1/admin/… (what rapportctl's status,
    /// replay, switch, drop, verify and reidentify call).
    ///
    /// These commands read and write the key registry topic ([topics] keys,
    /// default rapport.keys.v1) directly: they need the brokers, not a key,
    /// which is how the first admin key is made. The services pick up a new
    /// or revoked key within seconds, without a restart.
    Keys {
        #[command(subcommand)]
        action: keys::KeysAction,
    },
}

#[derive(Subcommand, Debug)]
enum TopicsAction {
    /// Create every defined topic that does not exist yet. Existing topics are
    /// never changed: a partition count or a configuration value (of the
    /// keys the definition sets) that differs from the definition is
    /// reported, and the command fails.
    Create {
        /// Topic definition file; default: the copy built into rapportctl,
        /// identical to infra/topics.toml.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Override the replication factor of every topic (1 for a single
        /// local broker).
        #[arg(long)]
        replication_factor: Option<i32>,
    },
    /// Show each defined topic's partition count on the cluster, and the
    /// configuration values that differ from the definition.
    Describe {
        /// Topic definition file; default: the copy built into rapportctl,
        /// identical to infra/topics.toml.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum DeadLettersAction {
    /// One line per dead letter: its offset, the refusing service, where the
    /// refused record sat and why.
    List,
    /// Everything about one dead letter, including the refused bytes.
    Show {
        /// The dead letter's offset (as `list` prints it).
        offset: i64,
    },
    /// Re-submit dead letters to the topic they came from, in their original
    /// order, after the cause was fixed. Each carries a header naming its
    /// dead letter, so the projector applies it once however often it is
    /// retried; identity drops events it already resolved by event id.
    Retry {
        /// Only letters refused by this service (identity or projector).
        #[arg(long)]
        service: Option<String>,
        /// Only letters at or after this offset.
        #[arg(long, default_value_t = 0)]
        from: i64,
        /// Show what would be re-submitted without sending anything.
        #[arg(long)]
        dry_run: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    rapport_common::init_logging_filtered(args.common.log_json, "warn,librdkafka=off");
    let config = args.common.load()?;
    if let Command::Import {
        what,
        file,
        ingest_url,
        dry_run,
        resume,
        rejects,
        batch,
        parallel,
        currency,
        channel,
        date_order,
        utc_offset,
    } = args.command
    {
        let options = import::Options {
            kind: import::Kind::parse(&what).expect("clap allows only the known kinds"),
            file,
            ingest_url,
            key: args.key,
            dry_run,
            rejects,
            batch: usize::from(batch),
            parallel: usize::from(parallel),
            currency: currency.map(|currency| currency.to_ascii_uppercase()),
            channel,
            date_order: date_order.as_deref().and_then(import::DateOrder::parse),
            utc_offset_minutes: utc_offset,
            resume,
        };
        tokio::task::block_in_place(|| import::run(&options))?;
        return Ok(());
    }
    // A status must not wait long for a service that hangs.
    let timeout = match args.command {
        Command::Status { .. } => STATUS_TIMEOUT,
        _ => ADMIN_TIMEOUT,
    };
    let services = Services::new(
        &args.query_url,
        &args.identity_url,
        args.key.as_deref(),
        timeout,
    )?;
    // Commands block (HTTP, Kafka reads, sleeps between polls); the topics'
    // admin client is async and runs on the runtime's handle.
    tokio::task::block_in_place(|| run(args.command, &services, &config))
}

fn run(
    command: Command,
    services: &Services,
    config: &rapport_common::config::Config,
) -> anyhow::Result<()> {
    match command {
        Command::Status { json } => status::show(services, json),
        Command::Replay {
            projection,
            version,
            from,
            until,
            switch,
            identity_version,
            no_wait,
        } => replay::replay(
            services,
            replay::ReplayOptions {
                projection: &projection,
                version,
                from: &from,
                until,
                identity_version: identity_version.as_deref(),
                switch,
                no_wait,
            },
        ),
        Command::Switch {
            version,
            follow_other_topic,
        } => replay::switch_live(services, &version, follow_other_topic),
        Command::Drop { version } => replay::drop_version(services, &version),
        Command::Partitions {
            action:
                PartitionsAction::Move {
                    partition,
                    to,
                    patience_s,
                },
        } => partitions::move_partition(services, partition, &to, Duration::from_secs(patience_s)),
        Command::Verify {
            other, patience_s, ..
        } => replay::verify(services, &other, Duration::from_secs(patience_s)),
        Command::Reidentify {
            version,
            no_wait,
            compare,
            drop,
            patience_s,
        } => {
            let action = match (compare, drop) {
                (Some(name), _) => Reidentify::Compare(name),
                (_, Some(name)) => Reidentify::Drop(name),
                (None, None) => Reidentify::Start { version, no_wait },
            };
            reidentify::reidentify(services, action, Duration::from_secs(patience_s))
        }
        Command::Deadletters { action } => match action {
            DeadLettersAction::List => dead_letters::list(config),
            DeadLettersAction::Show { offset } => dead_letters::show(config, offset),
            DeadLettersAction::Retry {
                service,
                from,
                dry_run,
            } => dead_letters::retry(
                config,
                dead_letters::RetryFilter {
                    service,
                    from,
                    dry_run,
                },
            ),
        },
        Command::Keys { action } => keys::run(config, action),
        Command::Import { .. } => unreachable!("import runs before the services are set up"),
        Command::Erase { value, kind, show } => match (value, show) {
            (_, Some(id)) => erase::show(services, &id),
            (Some(value), None) => erase::erase(services, &value, kind.as_deref()),
            (None, None) => anyhow::bail!(
                "name the person to erase: rapportctl erase <customer id | email | phone>"
            ),
        },
        Command::Topics { action } => {
            let runtime = tokio::runtime::Handle::current();
            match action {
                TopicsAction::Create {
                    file,
                    replication_factor,
                } => runtime.block_on(topics::create(config, file.as_ref(), replication_factor)),
                TopicsAction::Describe { file } => {
                    runtime.block_on(topics::describe(config, file.as_ref()))
                }
            }
        }
    }
}
