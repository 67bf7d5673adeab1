//! Where every service stands: one row per consumer partition, from the
//! services' `/v1/admin/status`.

use anyhow::bail;

use crate::client::Services;

/// The size of a store's column family as a status row shows it: bytes on
/// disk, and the bytes its compactions still have to rewrite.
struct Stored {
    bytes: u64,
    to_compact: u64,
}

impl Stored {
    fn of(report: &serde_json::Value, bytes_field: &str) -> Self {
        Self {
            bytes: report[bytes_field].as_u64().unwrap_or(0),
            to_compact: report["compaction_pending_bytes"].as_u64().unwrap_or(0),
        }
    }
}

fn print_consumer(
    name: &str,
    version: &str,
    live: &str,
    stored: &Stored,
    consumer: &serde_json::Value,
) {
    let rate = consumer["events_per_second"].as_f64().unwrap_or(0.0);
    let text = |value: &serde_json::Value| {
        value
            .as_i64()
            .map_or("-".to_owned(), |number| number.to_string())
    };
    for partition in consumer["partitions"].as_array().into_iter().flatten() {
        println!(
            "{name:<16} {version:<8} {live:<5} {:>9} {:>12} {:>12} {:>8} {rate:>10.0} {:>12} {:>12}",
            text(&partition["partition"]),
            text(&partition["applied_offset"]),
            text(&partition["log_end"]),
            text(&partition["lag"]),
            stored.bytes,
            stored.to_compact
        );
    }
    let last_error = &consumer["last_error"];
    if let Some(error) = last_error["message"].as_str() {
        // Whether the worker got over it matters more than the error itself.
        let since = match last_error["batches_since"].as_u64() {
            Some(0) | None => "no batch committed since".to_owned(),
            Some(batches) => format!("{batches} batches committed since"),
        };
        let ago = last_error["at_ms"]
            .as_i64()
            .map(|at_ms| {
                let seconds = (rapport_common::now_ms() - at_ms).max(0) / 1000;
                format!(" {seconds} s ago")
            })
            .unwrap_or_default();
        println!("{name:<16} last error{ago} ({since}): {error}");
    }
}

/// Prints the status table, or with `json` the services' answers as they are.
pub(crate) fn show(services: &Services, json: bool) -> anyhow::Result<()> {
    let identity = services
        .identity
        .get::<serde_json::Value>("/v1/admin/status");
    let projector = services
        .projector
        .get::<serde_json::Value>("/v1/admin/status");
    if json {
        let answer = |result: &anyhow::Result<serde_json::Value>| match result {
            Ok(value) => value.clone(),
            Err(error) => serde_json::json!({ "error": format!("{error:#}") }),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"identity": answer(&identity), "projector": answer(&projector)})
            )?
        );
        return Ok(());
    }
    println!(
        "{:<16} {:<8} {:<5} {:>9} {:>12} {:>12} {:>8} {:>10} {:>12} {:>12}",
        "name",
        "version",
        "live",
        "partition",
        "applied",
        "log end",
        "lag",
        "events/s",
        "bytes",
        "to compact"
    );
    match &identity {
        Ok(report) => print_consumer(
            "identity",
            "v1",
            "yes",
            &Stored::of(report, "graph_bytes"),
            &report["consumer"],
        ),
        Err(error) => println!("identity: unreachable: {error:#}"),
    }
    if let Ok(report) = &identity {
        for version in report["versions"].as_array().into_iter().flatten() {
            print_consumer(
                "identity",
                version["version"].as_str().unwrap_or("?"),
                "no",
                &Stored::of(version, "graph_bytes"),
                &version["consumer"],
            );
        }
    }
    match &projector {
        Ok(report) => {
            for projection in report["projections"].as_array().into_iter().flatten() {
                print_consumer(
                    projection["projection"].as_str().unwrap_or("?"),
                    projection["version"].as_str().unwrap_or("?"),
                    if projection["live"].as_bool() == Some(true) {
                        "yes"
                    } else {
                        "no"
                    },
                    &Stored::of(projection, "state_bytes"),
                    &projection["consumer"],
                );
            }
        }
        Err(error) => println!("projector: unreachable: {error:#}"),
    }
    if identity.is_err() || projector.is_err() {
        bail!("some services did not answer");
    }
    Ok(())
}
