//! The answers of the services' admin endpoints (`/v1/admin/...`) as types,
//! so that the services and `rapportctl` agree on every field name at
//! compile time rather than at run time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::status::ConsumerReport;

/// A refused request: `{"error": "...", "details": [...]}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorAnswer {
    pub error: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<ErrorDetail>,
}

/// One broken rule of a refused request.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Position of the event in the batch, when the error is about one event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub field: String,
    pub message: String,
}

// The projector (`--query-url`).

/// Where a rebuild starts reading the customer topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum StartFrom {
    Beginning,
    Offset {
        partition: i32,
        offset: i64,
    },
    /// Only records received at or after this instant.
    Time {
        at_ms: i64,
    },
}

impl StartFrom {
    /// Parses `beginning`, `offset:PARTITION:OFFSET` or `time:RFC3339`.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        if text == "beginning" {
            return Ok(Self::Beginning);
        }
        if let Some(rest) = text.strip_prefix("offset:") {
            let (partition, offset) = rest
                .split_once(':')
                .ok_or("offset: needs PARTITION:OFFSET")?;
            let partition = partition
                .parse()
                .map_err(|_| format!("bad partition {partition}"))?;
            let offset = offset.parse().map_err(|_| format!("bad offset {offset}"))?;
            return Ok(Self::Offset { partition, offset });
        }
        if let Some(rest) = text.strip_prefix("time:") {
            let at_ms = rapport_projections::time::parse_rfc3339(rest)
                .map_err(|error| error.to_string())?;
            return Ok(Self::Time { at_ms });
        }
        Err(format!(
            "{text} is not beginning, offset:P:O or time:RFC3339"
        ))
    }
}

/// `GET /v1/admin/status` of the projector.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProjectorStatus {
    /// `projector`.
    pub service: String,
    pub projections: Vec<ProjectionVersion>,
    /// Which process serves which partition of the customer topic, as this
    /// process sees the projectors topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ownership: Option<Ownership>,
}

/// Who serves the customer topic's partitions. Reads of a person go to the
/// process serving each of their profiles' partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Ownership {
    /// This process's URL.
    pub me: String,
    pub partition_count: i32,
    /// Every projector whose announcement holds, this one included.
    pub projectors: Vec<ProjectorReport>,
    /// One per partition, in order.
    pub partitions: Vec<PartitionOwners>,
    /// Partitions no process owns: reads touching them answer 503.
    pub unowned: Vec<i32>,
    /// Partitions owned but not yet read to their end by any owner (and
    /// not by this process): reads touching them answer 503 until one is.
    pub catching_up: Vec<i32>,
    /// Partitions more than one process owns. Harmless while a partition
    /// moves (the newest serving process answers), a misconfiguration
    /// otherwise.
    pub overlapping: Vec<i32>,
}

/// One projector process, as it announced itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProjectorReport {
    pub url: String,
    pub owned: Vec<i32>,
    /// The owned partitions it has read to their end since it started.
    pub serving: Vec<i32>,
    pub live_version: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339: its latest announcement.
    pub announced_at: String,
}

/// The processes owning one partition, and the one that answers for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PartitionOwners {
    pub partition: i32,
    pub owners: Vec<String>,
    /// The process reads of this partition go to; none when it is unowned
    /// or still catching up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_by: Option<String>,
}

/// One version of a projection, as the status and the version listing show it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProjectionVersion {
    pub projection: String,
    pub version: String,
    pub live: bool,
    pub from: StartFrom,
    /// The end of a bounded snapshot (RFC 3339); none for a version that
    /// follows the head.
    pub until: Option<String>,
    /// The topic it reads.
    pub topic: String,
    /// A bounded version that reached its end, or a worker that stopped.
    pub finished: bool,
    /// The worker stopped with an error: `consumer.last_error`. An error
    /// there without this flag is one the worker got over.
    pub failed: bool,
    pub state_bytes: u64,
    /// What RocksDB's compactions of this version still have to rewrite.
    pub compaction_pending_bytes: u64,
    pub consumer: ConsumerReport,
}

/// `GET /v1/admin/versions` of the projector.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProjectionVersions {
    pub live: String,
    pub versions: Vec<ProjectionVersion>,
}

/// `POST /v1/admin/replays`: what to rebuild. Unknown fields are refused.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Only `customer_view` today.
    pub projection: String,
    /// Default: the next free vN.
    pub version: Option<String>,
    /// `beginning` (default), `offset:P:O` or `time:RFC3339`.
    pub from: Option<String>,
    /// `time:RFC3339`: a bounded snapshot of what ingest received by then.
    pub until: Option<String>,
    /// Another topic to build from than the customer topic: a graph
    /// version's.
    pub source_topic: Option<String>,
}

/// `PUT /v1/admin/partitions` of a projector: the customer-topic
/// partitions it owns from now on. Unknown fields are refused.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartitionsRequest {
    /// At least one; each below the topic's partition count.
    pub partitions: Vec<i32>,
    /// Give up partitions no other projector serves (their people's reads
    /// answer 503 until one does). Default false: refused.
    #[serde(default)]
    pub force: bool,
}

/// The answer to `PUT /v1/admin/partitions`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PartitionsSet {
    /// What the projector owns now.
    pub partitions: Vec<i32>,
    /// Taken on: applied from their stored offsets (their beginning, the
    /// first time); served once read to their end.
    pub taken: Vec<i32>,
    /// Given up: no longer served or applied.
    pub released: Vec<i32>,
}

/// The answer to `POST /v1/admin/replays`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplayStarted {
    pub version: String,
    pub family: String,
    pub topic: Option<String>,
}

/// The answer to `POST /v1/admin/versions/{version}/switch`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionSwitched {
    pub live: String,
    /// The topic the live version reads from now on.
    pub topic: Option<String>,
}

/// The answer to `DELETE /v1/admin/versions/{version}` of the projector.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProjectionDropped {
    pub dropped: String,
}

/// `GET /v1/admin/verify?other=`: two versions compared from one
/// snapshot. Each pair is the live (or `live=`) version, then `other`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VerifyReport {
    /// The two versions' column families.
    pub versions: [String; 2],
    /// The topics they read; offsets are compared partition by partition
    /// also across topics.
    pub topics: [Option<String>; 2],
    pub same_offsets: bool,
    pub keys: [u64; 2],
    pub checksums: [String; 2],
    /// Same offsets and no differing key.
    pub identical: bool,
    /// Up to ten differing keys.
    pub first_differences: Vec<String>,
}

// The identity service (`--identity-url`).

/// `GET /v1/admin/status` of the identity service: the live graph, and
/// beside it the graph versions of re-identifications.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IdentityStatus {
    /// `identity`.
    pub service: String,
    pub graph_bytes: u64,
    pub compaction_pending_bytes: u64,
    pub consumer: ConsumerReport,
    pub versions: Vec<GraphVersion>,
}

/// How a graph version's worker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GraphVersionState {
    Running,
    /// Resolved every raw record up to its bounds: ready to compare.
    Finished,
    /// Asked to stop (shutdown) before reaching its bounds.
    Stopped,
    Failed,
}

impl GraphVersionState {
    /// The state as the answers spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }
}

/// One raw partition of a graph version.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GraphPartition {
    pub partition: i32,
    /// The last raw offset it will resolve; none when nothing is to be read.
    pub bound: Option<i64>,
    pub applied_offset: Option<i64>,
}

/// One graph version, as the status, the listing, `GET
/// /v1/admin/versions/{version}` and `POST /v1/admin/reidentify` show it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GraphVersion {
    pub version: String,
    pub family: String,
    /// The customer topic it writes.
    pub topic: String,
    pub created_at: String,
    pub state: GraphVersionState,
    pub partitions: Vec<GraphPartition>,
    /// Raw records up to the bounds, and how many of them were resolved.
    pub raw_records_total: i64,
    pub raw_records_read: i64,
    /// Refused records it skipped (the live resolver dead-lettered them).
    pub dead_letters_skipped: u64,
    pub graph_bytes: u64,
    pub compaction_pending_bytes: u64,
    pub consumer: ConsumerReport,
}

/// `GET /v1/admin/versions` of the identity service.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GraphVersions {
    /// Always `v1`: the live graph is not a version of its own.
    pub live: String,
    pub versions: Vec<GraphVersion>,
}

/// `POST /v1/admin/reidentify`: the graph version to start. Unknown fields
/// are refused.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReidentifyRequest {
    /// Default: the next free vN.
    pub version: Option<String>,
}

/// The answer to `DELETE /v1/admin/versions/{version}` of the identity service.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GraphDropped {
    pub dropped: String,
    /// The version's customer topic, and whether deleting it worked.
    pub topic: String,
    pub topic_deleted: bool,
}

/// `GET /v1/admin/versions/{version}/compare`: the live graph, as the
/// version's baseline froze it, against the version.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GraphComparison {
    /// `v1` and the version.
    pub versions: [String; 2],
    /// Same offsets, same entries.
    pub equal: bool,
    pub live: GraphSummary,
    pub version: GraphSummary,
    /// Up to ten differing keys, in key order.
    pub first_differences: Vec<GraphDifference>,
}

/// One side of a graph comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GraphSummary {
    /// Graph entries.
    pub keys: u64,
    pub checksum: String,
    /// The last resolved raw offset per partition.
    pub offsets: BTreeMap<i32, i64>,
}

/// Where two graphs differ at one key.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GraphDifference {
    /// The key in words, e.g. `identifier email:a@b.com`.
    pub key: String,
    /// `only in the live graph`, `only in NAME` or `values differ`.
    pub difference: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;
    use serde_json::{Value, json};

    /// Deserializes `sample` and checks that serializing it gives the
    /// sample back: every field read, none renamed, none invented.
    fn round_trips<T: Serialize + DeserializeOwned>(sample: Value) -> T {
        let typed: T = serde_json::from_value(sample.clone())
            .unwrap_or_else(|error| panic!("{error}: {sample:#}"));
        assert_eq!(serde_json::to_value(&typed).unwrap(), sample);
        typed
    }

    /// A consumer as `WorkerStatus::report` serializes it: one partition
    /// applied and sought, one not started, and an error got over.
    fn consumer(topic: &str) -> Value {
        json!({
            "topic": topic,
            "partitions": [
                {"partition": 0, "applied_offset": 41, "log_end": 50, "lag": 8,
                 "start_offset": 12, "start_found_by": "offset for time", "reached_end": false},
                {"partition": 1, "applied_offset": null, "log_end": 0, "lag": 0, "reached_end": true},
            ],
            "total_lag": 8,
            "events_per_second": 1250.5,
            "last_error": {"message": "broker gone", "at_ms": 1_700_000_000_000_i64, "batches_since": 3},
        })
    }

    fn projection_version(version: &str, live: bool) -> Value {
        json!({
            "projection": "customer_view",
            "version": version,
            "live": live,
            "from": {"Time": {"at_ms": 1_700_000_000_000_i64}},
            "until": "2024-03-01T00:00:00Z",
            "topic": "rapport.events.customer.v1",
            "finished": false,
            "failed": false,
            "state_bytes": 123_456,
            "compaction_pending_bytes": 0,
            "consumer": consumer("rapport.events.customer.v1"),
        })
    }

    fn graph_version(state: &str) -> Value {
        json!({
            "version": "r2",
            "family": "identity.r2",
            "topic": "rapport.events.customer.v1.r2",
            "created_at": "2024-03-01T00:00:00Z",
            "state": state,
            "partitions": [
                {"partition": 0, "bound": 99, "applied_offset": 49},
                {"partition": 1, "bound": null, "applied_offset": null},
            ],
            "raw_records_total": 100,
            "raw_records_read": 50,
            "dead_letters_skipped": 1,
            "graph_bytes": 4096,
            "compaction_pending_bytes": 512,
            "consumer": consumer("rapport.events.raw.v1"),
        })
    }

    #[test]
    fn error_answers_with_and_without_details() {
        let refused: ErrorAnswer = round_trips(json!({
            "error": "bad version",
            "details": [{"field": "version", "message": "must be 1-64 letters, digits, - or _"}],
        }));
        assert_eq!(refused.details[0].field, "version");
        round_trips::<ErrorAnswer>(json!({
            "error": "invalid event",
            "details": [{"index": 2, "field": "occurred_at", "message": "must be RFC 3339"}],
        }));
        let conflict: ErrorAnswer = round_trips(json!({"error": "version v1 is live"}));
        assert!(conflict.details.is_empty());
    }

    #[test]
    fn every_start_of_a_rebuild() {
        for (sample, start) in [
            (json!("Beginning"), StartFrom::Beginning),
            (
                json!({"Offset": {"partition": 1, "offset": 7}}),
                StartFrom::Offset {
                    partition: 1,
                    offset: 7,
                },
            ),
            (
                json!({"Time": {"at_ms": 42}}),
                StartFrom::Time { at_ms: 42 },
            ),
        ] {
            assert_eq!(round_trips::<StartFrom>(sample), start);
        }
    }

    #[test]
    fn projector_status_and_versions() {
        let status: ProjectorStatus = round_trips(json!({
            "service": "projector",
            "projections": [projection_version("v1", true), projection_version("r2", false)],
            "ownership": {
                "me": "http://a:8081", "partition_count": 2,
                "projectors": [{"url": "http://a:8081", "owned": [0, 1], "serving": [0],
                    "live_version": "v1", "started_at": "2026-12-06T10:00:00Z",
                    "announced_at": "2026-12-06T10:00:02Z"}],
                "partitions": [{"partition": 0, "owners": ["http://a:8081"], "served_by": "http://a:8081"},
                    {"partition": 1, "owners": ["http://a:8081"]}],
                "unowned": [], "catching_up": [1], "overlapping": [],
            },
        }));
        assert_eq!(
            status.ownership.as_ref().map(|o| o.catching_up.clone()),
            Some(vec![1])
        );
        let partitions = &status.projections[0].consumer.partitions;
        assert_eq!(partitions[0].start_offset, Some(12));
        assert!(partitions[1].reached_end && partitions[1].applied_offset.is_none());
        let listing: ProjectionVersions = round_trips(json!({
            "live": "v1",
            "versions": [projection_version("v1", true)],
        }));
        assert!(listing.versions[0].live);
        // A version that follows the head, with a worker that never erred.
        let mut following = projection_version("v1", true);
        following["from"] = json!("Beginning");
        following["until"] = Value::Null;
        following["consumer"]["last_error"] = Value::Null;
        let version: ProjectionVersion = round_trips(following);
        assert!(version.until.is_none() && version.consumer.last_error.is_none());
    }

    #[test]
    fn projector_replay_switch_drop_and_verify() {
        round_trips::<ReplayRequest>(json!({
            "projection": "customer_view", "version": null, "from": "beginning",
            "until": "time:2024-03-01T00:00:00Z", "source_topic": "rapport.events.customer.v1.r2",
        }));
        round_trips::<ReplayStarted>(json!({
            "version": "r2", "family": "customer_view.r2", "topic": "rapport.events.customer.v1",
        }));
        round_trips::<VersionSwitched>(
            json!({"live": "r2", "topic": "rapport.events.customer.v1"}),
        );
        round_trips::<ProjectionDropped>(json!({"dropped": "v1"}));
        let report: VerifyReport = round_trips(json!({
            "versions": ["customer_view.v1", "customer_view.r2"],
            "topics": ["rapport.events.customer.v1", null],
            "same_offsets": true,
            "keys": [40, 41],
            "checksums": ["9f86d081884c7d65", "60303ae22b998861"],
            "identical": false,
            "first_differences": ["P\u{0}c-7"],
        }));
        assert!(report.same_offsets && !report.identical);
    }

    #[test]
    fn identity_status_versions_and_reidentify() {
        let status: IdentityStatus = round_trips(json!({
            "service": "identity",
            "graph_bytes": 8192,
            "compaction_pending_bytes": 0,
            "consumer": consumer("rapport.events.raw.v1"),
            "versions": [graph_version("running")],
        }));
        assert_eq!(status.versions[0].state, GraphVersionState::Running);
        for (state, expected) in [
            ("finished", GraphVersionState::Finished),
            ("stopped", GraphVersionState::Stopped),
            ("failed", GraphVersionState::Failed),
        ] {
            assert_eq!(
                round_trips::<GraphVersion>(graph_version(state)).state,
                expected
            );
            assert_eq!(expected.as_str(), state);
        }
        round_trips::<GraphVersions>(json!({"live": "v1", "versions": []}));
        round_trips::<ReidentifyRequest>(json!({"version": "r2"}));
        round_trips::<GraphDropped>(json!({
            "dropped": "r2", "topic": "rapport.events.customer.v1.r2", "topic_deleted": true,
        }));
    }

    #[test]
    fn identity_comparison() {
        let comparison: GraphComparison = round_trips(json!({
            "versions": ["v1", "r2"],
            "equal": false,
            // Offsets are keyed by partition; JSON object keys are strings.
            "live": {"keys": 12, "checksum": "ab12", "offsets": {"0": 99, "1": 4}},
            "version": {"keys": 13, "checksum": "cd34", "offsets": {"0": 99, "1": 4}},
            "first_differences": [
                {"key": "identifier email:a@b.com", "difference": "only in r2"},
            ],
        }));
        assert_eq!(comparison.live.offsets[&1], 4);
    }
}

/// An erasure as identity's `/v1/admin/erasures` answers it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErasureShown {
    pub erasure_id: String,
    /// `pending` or `done`.
    pub state: String,
    pub requested_at: String,
    pub done_at: Option<String>,
    /// The id of the API key that asked.
    pub requested_by: Option<String>,
    /// The person's pseudonymous id.
    pub person: String,
    pub identifiers: usize,
    pub keys_destroyed: usize,
}
