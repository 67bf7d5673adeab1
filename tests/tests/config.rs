//! Configuration as the services read it: defaults, then the TOML file, then
//! `RAPPORT_*` variables, then flags, each layer over the one before; a bad
//! file stops a service at start with the key named. And a projector that
//! owns only some partitions of the customer topic.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rapport_e2e::{Pipeline, bin_dir, event, free_port};
use serde_json::json;

/// A started service, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts ingest with `file` as its configuration, `environment` and `flags`;
/// returns it once one of `ports` answers /healthz, and which.
fn ingest_listening_on(
    file: &Path,
    environment: &[(&str, String)],
    flags: &[String],
    ports: &[u16],
) -> (Running, u16) {
    let mut child = Running(
        Command::new(bin_dir().join("rapport-ingest"))
            .arg("--config")
            .arg(file)
            .args(flags)
            .env_remove("RAPPORT_INGEST_LISTEN")
            .envs(environment.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rapport-ingest"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(port) = ports.iter().find(|port| {
            let url = format!("http://127.0.0.1:{port}/healthz");
            rapport_e2e::http_agent().get(&url).call().is_ok()
        }) {
            return (child, *port);
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("rapport-ingest exited with {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("rapport-ingest answered on none of {ports:?}");
}

fn stop(child: Running) {
    drop(child);
}

#[test]
fn flags_beat_variables_beat_the_file_beats_the_defaults() {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("rapport.toml");
    let (from_file, from_variable, from_flag) = (free_port(), free_port(), free_port());
    let ports = [from_file, from_variable, from_flag];
    std::fs::write(
        &file,
        format!(
            "[kafka]\nbrokers = \"{}\"\n[topics]\nkeys = \"{}\"\n[privacy]\nsealing = \"off\"\n[ingest]\nlisten = \"127.0.0.1:{from_file}\"\n",
            rapport_e2e::brokers(),
            rapport_e2e::register_test_keys().topic
        ),
    )
    .unwrap();
    let variable = [(
        "RAPPORT_INGEST_LISTEN",
        format!("127.0.0.1:{from_variable}"),
    )];
    let flag = ["--listen".to_owned(), format!("127.0.0.1:{from_flag}")];

    let (child, port) = ingest_listening_on(&file, &[], &[], &ports);
    stop(child);
    assert_eq!(port, from_file, "the file over the default");
    let (child, port) = ingest_listening_on(&file, &variable, &[], &ports);
    stop(child);
    assert_eq!(port, from_variable, "the variable over the file");
    let (child, port) = ingest_listening_on(&file, &variable, &flag, &ports);
    stop(child);
    assert_eq!(port, from_flag, "the flag over the variable");
}

/// Runs `binary --config file` and expects it to stop within 30 s, failing,
/// with every one of `named` in what it printed.
fn refused(binary: &str, toml: &str, named: &[&str]) {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("rapport.toml");
    std::fs::write(&file, toml).unwrap();
    let said = directory.path().join("stderr");
    let mut child = Running(
        Command::new(bin_dir().join(binary))
            .arg("--config")
            .arg(&file)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", free_port()))
            .env_remove("RAPPORT_BROKERS")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&said).unwrap())
            .spawn()
            .unwrap_or_else(|error| panic!("run {binary}: {error}")),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{binary} kept running with {toml:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let said = std::fs::read_to_string(&said).unwrap();
    assert!(!status.success(), "{binary} accepted {toml:?}");
    for name in named {
        assert!(
            said.contains(name),
            "{binary} on {toml:?} did not name {name}: {said}"
        );
    }
}

#[test]
fn a_bad_configuration_file_stops_each_service_and_names_the_key() {
    refused(
        "rapport-ingest",
        "[ingest]\nlisne = \"127.0.0.1:1\"\n",
        &["lisne"],
    );
    refused(
        "rapport-identity",
        "[identity]\nreorder_grace_ms = \"soon\"\n",
        &["reorder_grace_ms"],
    );
    refused(
        "rapport-projector",
        "[projector]\nmemtable_bytes = 1024\n",
        &["projector.memtable_bytes"],
    );
    refused(
        "rapport-projector",
        "[analytics.churn]\np_alive_below = 1.5\n",
        &["churn.p_alive_below"],
    );
    refused(
        "rapport-ingest",
        "[kafka]\nbrokers = \"\"\n",
        &["kafka.brokers"],
    );
    // Not TOML at all.
    refused("rapport-identity", "[identity\n", &["rapport.toml"]);
}

#[test]
fn a_projector_owning_some_partitions_applies_only_them_and_answers_for_everyone() {
    let pipeline = Pipeline::start("some-partitions");
    let events: Vec<_> = (0..200)
        .map(|index| {
            event(
                "web.page_viewed",
                "2026-11-01T10:00:00Z",
                json!({"customer_id": format!("c-part-{index}")}),
                json!({"url": "/"}),
            )
        })
        .collect();
    pipeline.send_ok(&events);
    pipeline.wait_until_caught_up(Duration::from_secs(90));
    let partial =
        Pipeline::start_peer_projector(&pipeline, "projector-some", &["--partitions", "0,2"]);
    let ends = rapport_e2e::high_watermarks(&pipeline.topics.customer);
    let owned: std::collections::BTreeMap<i32, i64> = ends
        .iter()
        .filter(|(partition, _)| [0, 2].contains(*partition))
        .map(|(partition, end)| (*partition, *end))
        .collect();
    rapport_e2e::wait_for(
        "the partial projector to apply its partitions",
        Duration::from_secs(90),
        || rapport_e2e::applied_through(&partial, rapport_e2e::FIRST_LIVE_PROJECTION, &owned),
    );
    // It reports positions for its own partitions only.
    let metrics = partial.metrics();
    for partition in [1, 3] {
        assert_eq!(
            rapport_e2e::metric_value(
                &metrics,
                "rapport_projector_applied_offset",
                &format!("partition=\"{partition}\""),
            ),
            None,
            "partition {partition} is not its own"
        );
    }

    let agent = rapport_e2e::http_agent();
    let view = |port: u16, customer: &str| -> (u16, serde_json::Value) {
        let mut response = agent
            .get(&format!("http://127.0.0.1:{port}/v1/customers/{customer}"))
            .header(
                "authorization",
                rapport_e2e::bearer(&rapport_e2e::test_keys().read),
            )
            .call()
            .expect("query API answers");
        let status = response.status().as_u16();
        (status, response.body_mut().read_json().unwrap_or_default())
    };
    // Every customer is answered, those of partitions 1 and 3 with what the
    // pipeline's projector (which owns them too) holds; the partitions are
    // those the broker put each key on.
    let me = format!("http://127.0.0.1:{}", partial.port);
    rapport_e2e::wait_for(
        "the partial projector to serve its partitions",
        Duration::from_secs(30),
        || {
            // Served because it has read them to their end, not because
            // the other process's announcement is not in yet.
            let status = rapport_e2e::admin_status(partial.port);
            let ownership = &status["ownership"];
            ownership["projectors"]
                .as_array()
                .is_some_and(|projectors| {
                    projectors.len() == 2
                        && projectors
                            .iter()
                            .all(|projector| projector["serving"] == projector["owned"])
                })
                && [0, 2].iter().all(|partition| {
                    ownership["partitions"][*partition as usize]["served_by"] == json!(me)
                })
        },
    );
    let asked_before =
        rapport_e2e::metric_sum(&partial.metrics(), "rapport_projector_peer_reads_total", "");
    let by_partition = rapport_e2e::keys_by_partition(&pipeline.topics.customer);
    let elsewhere = |id: &str| {
        ![0, 2].contains(&rapport_common::partitioning::partition_of(
            id.as_bytes(),
            4,
        ))
    };
    let mut others = 0;
    let mut expected_reads = 0;
    for index in 0..200 {
        let customer = format!("c-part-{index}");
        // Sealed, a customer's profile is named by the pseudonym of their id.
        let profile = pipeline.pseudonym("customer_id", &customer);
        let partition = rapport_common::partitioning::partition_of(profile.as_bytes(), 4);
        assert!(
            by_partition[&partition].contains(&profile),
            "{customer}: the broker put it on partition {partition}"
        );
        let (status, seen) = view(partial.port, &customer);
        assert_eq!(status, 200, "{customer} of partition {partition}: {seen}");
        assert_eq!(seen, pipeline.get(&format!("/v1/customers/{customer}")).1);
        // The profile, and the id's next generation (where the customer
        // would be after an erasure), are read where they live.
        let next = rapport_projections::identity::in_generation(&profile, 1);
        expected_reads += i64::from(elsewhere(&profile)) + i64::from(elsewhere(&next));
        if elsewhere(&profile) {
            others += 1;
        }
    }
    assert!(
        others > 0 && others < 200,
        "{others} of 200 on partitions 1 and 3"
    );
    let asked =
        rapport_e2e::metric_sum(&partial.metrics(), "rapport_projector_peer_reads_total", "")
            - asked_before;
    assert_eq!(
        asked, expected_reads,
        "a read of the other process for each key it holds, none for the others"
    );
}
