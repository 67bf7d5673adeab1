//! Re-identification: identity resolution re-run from the raw topic into a
//! graph version beside the live graph, followed until done and compared.

use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::client::Services;
use crate::progress::progress;

/// What `reidentify` does.
pub(crate) enum Reidentify {
    Start {
        version: Option<String>,
        no_wait: bool,
    },
    Compare(String),
    Drop(String),
}

pub(crate) fn reidentify(
    services: &Services,
    action: Reidentify,
    patience: Duration,
) -> anyhow::Result<()> {
    let version = match action {
        Reidentify::Drop(version) => {
            let answer = services
                .identity
                .delete::<serde_json::Value>(&format!("/v1/admin/versions/{version}"))?;
            println!(
                "graph version {version} dropped{}",
                if answer["topic_deleted"] == true {
                    format!(
                        ", topic {} deleted",
                        answer["topic"].as_str().unwrap_or("?")
                    )
                } else {
                    format!(
                        "; topic {} could not be deleted (see the identity log)",
                        answer["topic"].as_str().unwrap_or("?")
                    )
                }
            );
            return Ok(());
        }
        Reidentify::Compare(version) => version,
        Reidentify::Start { version, no_wait } => {
            let created = services.identity.post::<serde_json::Value>(
                "/v1/admin/reidentify",
                Some(&serde_json::json!({ "version": version })),
            )?;
            let version = created["version"]
                .as_str()
                .context("identity did not name the version")?
                .to_owned();
            let bounds: Vec<String> = created["partitions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|partition| {
                    format!(
                        "{}:{}",
                        partition["partition"],
                        partition["bound"]
                            .as_i64()
                            .map_or("-".to_owned(), |bound| bound.to_string())
                    )
                })
                .collect();
            println!(
                "re-identifying into version {version}: graph {}, topic {}",
                created["family"].as_str().unwrap_or("?"),
                created["topic"].as_str().unwrap_or("?")
            );
            println!(
                "bounded by the live graph's raw offsets {} ({} raw records)",
                bounds.join(" "),
                created["raw_records_total"]
            );
            if no_wait {
                return Ok(());
            }
            version
        }
    };
    wait_for_version(services, &version, patience)?;
    let report = services
        .identity
        .get::<serde_json::Value>(&format!("/v1/admin/versions/{version}/compare"))?;
    let side = |name: &str, summary: &serde_json::Value| {
        println!(
            "{name:<12} {:>10} keys  checksum {}  offsets {}",
            summary["keys"],
            summary["checksum"].as_str().unwrap_or("?"),
            summary["offsets"]
        );
    };
    side("live (v1)", &report["live"]);
    side(&version, &report["version"]);
    if report["equal"] == true {
        println!("equal");
        return Ok(());
    }
    println!("different");
    for difference in report["first_differences"].as_array().into_iter().flatten() {
        println!(
            "differs at {} ({})",
            difference["key"].as_str().unwrap_or("?"),
            difference["difference"].as_str().unwrap_or("?")
        );
    }
    bail!("the re-identified graph {version} differs from the live graph")
}

/// Shows progress until the version resolved every raw record up to its bounds.
fn wait_for_version(services: &Services, version: &str, patience: Duration) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    loop {
        let report = services
            .identity
            .get::<serde_json::Value>(&format!("/v1/admin/versions/{version}"))?;
        let read = report["raw_records_read"].as_i64().unwrap_or(0);
        let total = report["raw_records_total"].as_i64().unwrap_or(0);
        match report["state"].as_str() {
            Some("finished") => {
                progress("");
                println!(
                    "version {version} resolved {total} raw records in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            Some("running") => {}
            other => {
                progress("");
                bail!(
                    "version {version} is {}: {}",
                    other.unwrap_or("unknown"),
                    report["consumer"]["last_error"]["message"]
                        .as_str()
                        .unwrap_or("see the identity log")
                );
            }
        }
        if started.elapsed() > patience {
            progress("");
            bail!(
                "version {version} did not finish within {patience:?} ({read} of {total} raw records); it keeps running, compare it later with --compare {version}"
            );
        }
        let rate = report["consumer"]["events_per_second"]
            .as_f64()
            .unwrap_or(0.0);
        let eta = if rate > 0.0 {
            format!("{:.0} s", (total - read) as f64 / rate)
        } else {
            "-".to_owned()
        };
        let done = if total > 0 {
            read as f64 / total as f64
        } else {
            1.0
        };
        let filled = (done * 30.0).round() as usize;
        progress(&format!(
            "{version}: [{}{}] {:>3.0}% {read}/{total} raw records, {rate:.0} events/s, ETA {eta}",
            "#".repeat(filled),
            "-".repeat(30 - filled.min(30)),
            done * 100.0
        ));
        std::thread::sleep(Duration::from_millis(500));
    }
}
