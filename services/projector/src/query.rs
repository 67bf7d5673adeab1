//! The query API's handlers over the projections: customers, timelines,
//! identifier conflicts, and the admin endpoints (status, versions,
//! replays, verification). The routes are declared in the router module;
//! people are read through the `read` module.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rapport_common::admin::{
    ProjectionDropped, ProjectionVersions, ProjectorStatus, ReplayRequest, ReplayStarted,
    VerifyReport, VersionSwitched,
};
use rapport_common::digest::{Digest, stable_hash};
use rapport_common::http::PathParams;
use rapport_common::http::{ApiError, FieldError};
use rapport_common::metrics::Registry;
use rapport_common::privacy::SecretKey;

use crate::cluster::Cluster;
use crate::read::{Peers, Person, View, person_of};
use crate::request::{bad_query, invalid_field, not_found};
use crate::unseal::{self, Vault};
use crate::versions::Versions;
use rapport_common::{Result, keys};
use rapport_projections::analytics::config::AnalyticsConfig;
use rapport_projections::customer_view::{
    ConflictEntry, CustomerDocument, ProfileState, TimelineEntry,
};
use rapport_projections::identity::{Identifier, IdentifierKind, newest_generation};
use rapport_projections::time::format_rfc3339;
use serde::{Deserialize, Serialize};

/// What the handlers share.
pub struct QueryState {
    pub versions: Arc<Versions>,
    pub registry: Registry,
    pub scores: crate::scores::Scoreboard,
    /// Where data keys come from when ingest seals personal data; `None`
    /// with sealing off, when answers pass as stored.
    vault: Option<Arc<dyn Vault>>,
    /// The other projector processes; `None` when this one reads every
    /// partition itself.
    pub(crate) cluster: Option<Arc<Cluster>>,
}

impl QueryState {
    pub fn new(versions: Arc<Versions>, registry: Registry, config: AnalyticsConfig) -> Self {
        let scores = crate::scores::Scoreboard::new(config, &registry);
        QueryState {
            versions,
            registry,
            scores,
            vault: None,
            cluster: None,
        }
    }

    /// Reads the partitions other processes serve from them.
    pub fn with_cluster(mut self, cluster: Arc<Cluster>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Who serves which partition, when this process is one of several.
    pub(crate) fn ownership(&self) -> Option<rapport_common::admin::Ownership> {
        self.cluster
            .as_ref()
            .map(|cluster| cluster.routes().report.clone())
    }

    /// Whether this process answers reads of `partitions`: it owns them
    /// all (applies them), so its store holds them.
    pub(crate) fn owns_all(&self, partitions: &[i32]) -> bool {
        match &self.cluster {
            Some(cluster) => partitions.iter().all(|partition| cluster.owns(*partition)),
            None => true,
        }
    }

    /// Whether this process owns the partition of the profile `id`.
    pub(crate) fn owns_profile(&self, id: &str) -> bool {
        self.cluster
            .as_ref()
            .is_none_or(|cluster| cluster.owns(cluster.partition_of(id)))
    }

    /// The people on `partitions`, for population figures another process
    /// asks of this one.
    pub(crate) fn served(&self, partitions: &[i32]) -> crate::read::Served {
        let count = self
            .cluster
            .as_ref()
            .map_or(1, |cluster| cluster.routes().partition_count());
        crate::read::Served::partitions(partitions, count)
    }

    /// Opens sealed tokens in answers, and pseudonymizes clear identifiers
    /// in lookups, with `vault`.
    pub fn with_vault(mut self, vault: Arc<dyn Vault>) -> Self {
        self.vault = Some(vault);
        self
    }
}

impl QueryState {
    /// Reads back, on a thread of its own, the scoreboard of every version
    /// that has an image (written by [`QueryState::save_scoreboards`]);
    /// requests for those boards wait for it rather than scan. Call it at
    /// start, before requests are served and as early after the workers
    /// started as possible: an image is only used if no batch was applied
    /// since it was written.
    pub fn restore_scoreboards(self: &Arc<Self>) -> Result<std::thread::JoinHandle<()>> {
        let mut imaged = Vec::new();
        for version in self.versions.names() {
            let Ok(view) = self.view_of(&version) else {
                continue;
            };
            if self.scores.has_image(&view)? {
                imaged.push(version);
            }
        }
        self.scores.begin_restore(&imaged);
        let state = self.clone();
        let restore = move || {
            for version in &imaged {
                let Ok(view) = state.view_of(version) else {
                    state.scores.end_restore(version);
                    continue;
                };
                let changes = state.versions.changes_of(version);
                if let Err(error) = state.scores.restore(&view, version, changes) {
                    tracing::warn!(version, %error, "could not read the scoreboard's image; it will be built by a scan");
                }
            }
        };
        std::thread::Builder::new()
            .name("scores-restore".into())
            .spawn(restore)
            .map_err(|source| rapport_common::Error::Io {
                context: "starting the scoreboard's restore".into(),
                source,
            })
    }

    /// Writes every scoreboard as its version's image, for
    /// [`QueryState::restore_scoreboards`] at the next start. Call it once
    /// the workers stopped.
    pub fn save_scoreboards(&self) -> Result<()> {
        for version in self.versions.names() {
            let Ok(view) = self.view_of(&version) else {
                continue;
            };
            let changes = self.versions.changes_of(&version);
            self.scores.save(&view, &version, changes)?;
        }
        Ok(())
    }

    /// The view of `version`, named or live.
    fn view_of(&self, version: &str) -> Result<View<'_>, ApiError> {
        let live = self.versions.live() == version;
        self.view((!live).then_some(version))
    }

    pub(crate) fn view(&self, version: Option<&str>) -> Result<View<'_>, ApiError> {
        let family = self.versions.family_for(version)?;
        let peers = self.cluster.as_ref().and_then(|cluster| {
            let routes = cluster.routes();
            (!routes.all_local()).then(|| Peers {
                routes,
                cluster: cluster.clone(),
                asked: version.unwrap_or_default().to_owned(),
            })
        });
        Ok(View {
            store: self.versions.store(),
            family,
            version: version.map_or_else(|| self.versions.live(), str::to_owned),
            peers,
            prefetched: None,
        })
    }

    pub(crate) fn vault(&self) -> Option<&dyn Vault> {
        self.vault.as_deref()
    }

    fn pseudonym_key(&self) -> Option<&SecretKey> {
        self.vault().map(Vault::pseudonym_key)
    }

    /// The person a path's customer id names: as given, or (sealing on) by
    /// the pseudonym of a clear customer id, in its newest generation (a
    /// customer id that came back after an erasure names the new person).
    pub(crate) fn person(&self, view: &View<'_>, id: &str) -> Result<Option<Person>> {
        // Sealed, profiles are named by pseudonyms (and prospect ids), so a
        // clear id is looked up by its pseudonym first; asking for it as a
        // profile id could only find data written before sealing was on.
        if let Some(pseudonym) = unseal::pseudonymous_id(self.pseudonym_key(), id) {
            let identifier = Identifier::new(IdentifierKind::CustomerId, pseudonym);
            let newest = newest_indexed(view, &identifier)?;
            if let Some(person) = person_of(view, &newest.value)? {
                return Ok(Some(person));
            }
        }
        person_of(view, id)
    }

    /// `answer` as a JSON response with its sealed tokens opened (see
    /// [`unseal::open_answer`]); the vault is asked on the blocking pool.
    pub(crate) async fn open_tokens(&self, answer: &impl Serialize) -> Result<Response, ApiError> {
        let json =
            serde_json::to_string(answer).map_err(|error| ApiError::Internal(error.to_string()))?;
        let json = match self.vault.clone() {
            Some(vault) if rapport_common::privacy::holds_token(&json) => {
                tokio::task::spawn_blocking(move || unseal::open_answer(Some(vault.as_ref()), json))
                    .await
                    .map_err(|error| ApiError::Internal(error.to_string()))??
            }
            _ => json,
        };
        Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
    }
}

/// The newest generation of `identifier` the view's identifier index
/// holds (see `rapport_projections::identity::generation_of`).
fn newest_indexed(view: &View<'_>, identifier: &Identifier) -> Result<Identifier> {
    // A customer id's entry is written by the profile it names, on that
    // profile's partition; any other identifier's by whichever profile
    // linked it first, on any partition.
    let own_partition = identifier.kind == IdentifierKind::CustomerId;
    let mut failure = None;
    let newest = newest_generation(identifier, |probe| {
        let key = keys::identifier(probe);
        let found = if own_partition {
            view.get_of(&probe.value, &key)
        } else {
            view.get_anywhere(&key)
        };
        match found {
            Ok(found) => found.is_some(),
            Err(error) => {
                failure.get_or_insert(error);
                false
            }
        }
    });
    failure.map_or(Ok(newest), Err)
}

pub(crate) fn document(person: &Person) -> CustomerDocument {
    let mut merged = ProfileState::default();
    for (_, profile) in &person.members {
        merged.merge(profile);
    }
    let merged_ids = person
        .members
        .iter()
        .map(|(id, _)| id.clone())
        .filter(|id| *id != person.root)
        .collect();
    CustomerDocument::render(&person.root, &merged, merged_ids)
}

pub(crate) async fn get_customer(
    State(state): State<Arc<QueryState>>,
    PathParams(customer_id): PathParams<String>,
    params: Result<Query<VersionParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|rejection| bad_query(rejection, "use version="))?;
    let person = blocking(state.clone(), params.version, move |state, view| {
        state
            .person(view, &customer_id)?
            .ok_or_else(|| not_found(&customer_id))
    })
    .await?;
    state.open_tokens(&document(&person)).await
}

/// Runs `work` with a view of the requested version on the blocking pool:
/// reads may wait for RocksDB, and for other projector processes.
pub(crate) async fn blocking<T: Send + 'static>(
    state: Arc<QueryState>,
    version: Option<String>,
    work: impl FnOnce(&QueryState, &View<'_>) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || {
        let view = state.view(version.as_deref())?;
        work(&state, &view)
    })
    .await
    .map_err(|error| ApiError::Internal(error.to_string()))?
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct LookupParams {
    /// A projection version; default the live one.
    version: Option<String>,
    /// Exactly one of these four: the shop's customer id,
    customer_id: Option<String>,
    /// an email (compared trimmed and lower-cased),
    email: Option<String>,
    /// a phone (compared by `+` and its digits),
    phone: Option<String>,
    /// or an anonymous id.
    anonymous_id: Option<String>,
}

pub(crate) async fn find_customer(
    State(state): State<Arc<QueryState>>,
    params: Result<Query<LookupParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let usage = "give exactly one of customer_id=, email=, phone=, anonymous_id=";
    let Query(mut params) = params.map_err(|rejection| bad_query(rejection, usage))?;
    let version = params.version.take();
    let given: Vec<(IdentifierKind, String)> = [
        (IdentifierKind::CustomerId, params.customer_id),
        (IdentifierKind::Email, params.email),
        (IdentifierKind::Phone, params.phone),
        (IdentifierKind::AnonymousId, params.anonymous_id),
    ]
    .into_iter()
    .filter_map(|(kind, value)| value.map(|value| (kind, value)))
    .collect();
    let [(kind, raw)] = given.as_slice() else {
        return Err(ApiError::Invalid {
            message: usage.to_owned(),
            details: vec![],
        });
    };
    let (kind, raw) = (*kind, raw.clone());
    let person = blocking(state.clone(), version, move |state, view| {
        lookup(state, view, kind, &raw)
    })
    .await?;
    state.open_tokens(&document(&person)).await
}

/// The person holding the identifier `raw` of `kind` (clear, as a caller
/// gives it: pseudonymized here when sealing is on).
pub(crate) fn lookup(
    state: &QueryState,
    view: &View<'_>,
    kind: IdentifierKind,
    raw: &str,
) -> Result<Person, ApiError> {
    let Some(identifier) = Identifier::normalised(kind, raw) else {
        return Err(ApiError::Invalid {
            message: "the identifier is empty".to_owned(),
            details: vec![FieldError {
                index: None,
                field: kind.as_str().to_owned(),
                message: "must not be empty".to_owned(),
            }],
        });
    };
    let pseudonym_key = state.pseudonym_key();
    // Sealed, the index holds pseudonyms, and an answer naming one would
    // only say what the caller sent: name the kind.
    let missing = match pseudonym_key {
        Some(_) => format!("no customer with this {}", kind.as_str()),
        None => format!("no customer with {identifier}"),
    };
    let identifier = newest_indexed(view, &unseal::indexed(pseudonym_key, identifier))?;
    let owner = match view.get_anywhere(&keys::identifier(&identifier))? {
        Some(bytes) => String::from_utf8(bytes)
            .map_err(|_| ApiError::Internal("corrupt identifier index".to_owned()))?,
        None => return Err(ApiError::NotFound(missing)),
    };
    person_of(view, &owner)?.ok_or_else(|| not_found(&owner))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct TimelineParams {
    /// A projection version; default the live one.
    version: Option<String>,
    /// 1-500, default 50.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// `next_before` of the previous page.
    before: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TimelineItem {
    pub(crate) occurred_at: String,
    pub(crate) event_id: String,
    #[serde(rename = "type")]
    pub(crate) event_type: String,
    pub(crate) channel: String,
    pub(crate) summary: String,
    /// The profile the event was recorded on (an absorbed one, or the customer).
    pub(crate) profile_id: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TimelinePage {
    pub(crate) customer_id: String,
    pub(crate) items: Vec<TimelineItem>,
    /// Pass as `before=` to get the next, older page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) next_before: Option<String>,
}

const DEFAULT_TIMELINE_LIMIT: usize = 50;
pub(crate) const MAX_TIMELINE_LIMIT: usize = 500;

pub(crate) fn parse_cursor(cursor: &str) -> Option<(i64, String)> {
    let (at, event_id) = cursor.split_once('_')?;
    Some((at.parse().ok()?, event_id.to_owned()))
}

pub(crate) async fn get_timeline(
    State(state): State<Arc<QueryState>>,
    PathParams(customer_id): PathParams<String>,
    params: Result<Query<TimelineParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params
        .map_err(|rejection| bad_query(rejection, "use limit= (1-500), before= and version="))?;
    let limit = params.limit.unwrap_or(DEFAULT_TIMELINE_LIMIT);
    if limit == 0 || limit > MAX_TIMELINE_LIMIT {
        return Err(ApiError::Invalid {
            message: "bad limit".to_owned(),
            details: vec![FieldError {
                index: None,
                field: "limit".to_owned(),
                message: format!("must be between 1 and {MAX_TIMELINE_LIMIT}"),
            }],
        });
    }
    let cursor = match params.before.as_deref() {
        None => None,
        Some(text) => Some(parse_cursor(text).ok_or_else(|| ApiError::Invalid {
            message: "bad cursor".to_owned(),
            details: vec![FieldError {
                index: None,
                field: "before".to_owned(),
                message: "must be a next_before value from an earlier page".to_owned(),
            }],
        })?),
    };
    let page = blocking(state.clone(), params.version, move |state, view| {
        timeline_page(state, view, &customer_id, limit, cursor)
    })
    .await?;
    state.open_tokens(&page).await
}

/// A page of `customer_id`'s timeline, newest first, before `cursor`
/// (an `(occurred_at_ms, event_id)` bound, excluded).
pub(crate) fn timeline_page(
    state: &QueryState,
    view: &View<'_>,
    customer_id: &str,
    limit: usize,
    cursor: Option<(i64, String)>,
) -> Result<TimelinePage, ApiError> {
    let person = state
        .person(view, customer_id)?
        .ok_or_else(|| not_found(customer_id))?;
    // Newest first across every profile of the person: take up to `limit`
    // (plus one, to know whether there is more) from each, then the newest
    // `limit` of those.
    let mut entries: Vec<(String, TimelineEntry)> = Vec::new();
    for (profile_id, _) in &person.members {
        let prefix = keys::timeline_prefix(profile_id);
        let bound = cursor
            .as_ref()
            .map(|(at, event_id)| keys::timeline(profile_id, *at, event_id));
        for (key, value) in view.scan_of(profile_id, &prefix, bound.as_deref(), limit + 1)? {
            let (_, at, event_id) = keys::decode_timeline(&key)
                .map_err(|error| ApiError::Internal(error.to_string()))?;
            let entry = TimelineEntry::decode_value(at, event_id, &value)
                .map_err(|error| ApiError::Internal(error.to_string()))?;
            entries.push((profile_id.clone(), entry));
        }
    }
    entries.sort_by(|(_, left), (_, right)| {
        (right.occurred_at_ms, &right.event_id).cmp(&(left.occurred_at_ms, &left.event_id))
    });
    let more = entries.len() > limit;
    entries.truncate(limit);
    let next_before = if more {
        entries
            .last()
            .map(|(_, entry)| format!("{}_{}", entry.occurred_at_ms, entry.event_id))
    } else {
        None
    };
    let items = entries
        .into_iter()
        .map(|(profile_id, entry)| TimelineItem {
            occurred_at: format_rfc3339(entry.occurred_at_ms),
            event_id: entry.event_id,
            event_type: entry.event_type,
            channel: entry.channel,
            summary: entry.summary,
            profile_id: person.shown(&profile_id),
        })
        .collect();
    let page = TimelinePage {
        customer_id: person.shown(&person.root),
        items,
        next_before,
    };
    Ok(page)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConflictParams {
    /// A projection version; default the live one.
    version: Option<String>,
    /// 1-1000, default 100.
    limit: Option<usize>,
}

/// `?version=` names a projection version; without it the live one is read.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct VersionParams {
    /// A projection version; default the live one.
    version: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ConflictList {
    conflicts: Vec<ConflictItem>,
}

/// One identifier two known customers claimed: it stays with its owner.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ConflictItem {
    recorded_at: String,
    identifier: String,
    owner: String,
    claimant: String,
    cause_event_id: String,
}

pub(crate) async fn list_conflicts(
    State(state): State<Arc<QueryState>>,
    params: Result<Query<ConflictParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) =
        params.map_err(|rejection| bad_query(rejection, "use limit= (1-1000) and version="))?;
    let limit = params.limit.unwrap_or(100).clamp(1, 1000);
    let conflicts = blocking(state.clone(), params.version, move |_, view| {
        conflicts(view, limit)
    })
    .await?;
    state.open_tokens(&ConflictList { conflicts }).await
}

/// The newest `limit` identifier conflicts, every partition's.
fn conflicts(view: &View<'_>, limit: usize) -> Result<Vec<ConflictItem>, ApiError> {
    let mut conflicts = Vec::new();
    for (_, value) in view.scan_everywhere(&[keys::CONFLICT], limit)? {
        let entry: ConflictEntry =
            postcard::from_bytes(&value).map_err(|error| ApiError::Internal(error.to_string()))?;
        // Pseudonyms show as what their people's profiles display.
        let owner = person_of(view, &entry.conflict.owner)?;
        let claimant = person_of(view, &entry.conflict.claimant)?;
        let shown = |id: &str| {
            [&owner, &claimant]
                .into_iter()
                .flatten()
                .map(|person| person.shown(id))
                .find(|shown| shown != id)
                .unwrap_or_else(|| id.to_owned())
        };
        let identifier = &entry.conflict.identifier;
        conflicts.push(ConflictItem {
            recorded_at: format_rfc3339(entry.received_at_ms),
            identifier: format!("{}:{}", identifier.kind.as_str(), shown(&identifier.value)),
            owner: shown(&entry.conflict.owner),
            claimant: shown(&entry.conflict.claimant),
            cause_event_id: entry.cause_event_id,
        });
    }
    Ok(conflicts)
}

pub(crate) async fn admin_status(State(state): State<Arc<QueryState>>) -> Json<ProjectorStatus> {
    Json(ProjectorStatus {
        service: "projector".to_owned(),
        projections: state.versions.reports(),
        ownership: state.ownership(),
    })
}

pub(crate) async fn healthz() -> Response {
    (StatusCode::OK, Json(rapport_common::http::Health::OK)).into_response()
}

pub(crate) async fn metrics(State(state): State<Arc<QueryState>>) -> Response {
    state.registry.response()
}

pub(crate) async fn create_replay(
    State(state): State<Arc<QueryState>>,
    request: Result<Json<ReplayRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<ReplayStarted>), ApiError> {
    let Json(request) = request.map_err(|rejection| ApiError::Invalid {
        message: rejection.body_text(),
        details: vec![],
    })?;
    if request.projection != crate::versions::PROJECTION {
        return Err(invalid_field(
            "projection",
            format!("must be {}", crate::versions::PROJECTION),
        ));
    }
    let from = crate::position::StartFrom::parse(request.from.as_deref().unwrap_or("beginning"))
        .map_err(|message| invalid_field("from", message))?;
    let until_ms = match request.until.as_deref() {
        None => None,
        Some(text) => {
            let time = text
                .strip_prefix("time:")
                .ok_or_else(|| invalid_field("until", "must be time:RFC3339"))?;
            Some(
                rapport_projections::time::parse_rfc3339(time)
                    .map_err(|error| invalid_field("until", error.to_string()))?,
            )
        }
    };
    let versions = state.versions.clone();
    let spec = tokio::task::spawn_blocking(move || {
        versions.create(request.version, from, until_ms, request.source_topic)
    })
    .await
    .map_err(|error| ApiError::Internal(error.to_string()))??;
    let topic = state.versions.topic_of(&spec.version);
    Ok((
        StatusCode::CREATED,
        Json(ReplayStarted {
            family: spec.family(),
            version: spec.version,
            topic,
        }),
    ))
}

pub(crate) async fn list_versions(
    State(state): State<Arc<QueryState>>,
) -> Json<ProjectionVersions> {
    Json(ProjectionVersions {
        live: state.versions.live(),
        versions: state.versions.reports(),
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct SwitchParams {
    /// Required to make live a version that reads another topic than the
    /// customer topic: it keeps reading that topic.
    #[serde(default)]
    follow_other_topic: bool,
}

pub(crate) async fn switch_version(
    State(state): State<Arc<QueryState>>,
    PathParams(version): PathParams<String>,
    params: Result<Query<SwitchParams>, QueryRejection>,
) -> Result<Json<VersionSwitched>, ApiError> {
    let Query(params) = params
        .map_err(|rejection| bad_query(rejection, "use follow_other_topic=true or nothing"))?;
    state.versions.switch(&version, params.follow_other_topic)?;
    Ok(Json(VersionSwitched {
        topic: state.versions.topic_of(&version),
        live: version,
    }))
}

pub(crate) async fn drop_version(
    State(state): State<Arc<QueryState>>,
    PathParams(version): PathParams<String>,
) -> Result<Json<ProjectionDropped>, ApiError> {
    let versions = state.versions.clone();
    let name = version.clone();
    tokio::task::spawn_blocking(move || versions.drop_version(&name))
        .await
        .map_err(|error| ApiError::Internal(error.to_string()))??;
    Ok(Json(ProjectionDropped { dropped: version }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyParams {
    /// The version to compare `other` to; default the live one.
    live: Option<String>,
    /// The version to compare.
    other: String,
}

/// A stored value as `verify` compares it: as today's release would write
/// it, so that a version built before a value format changed equals its
/// rebuild. Only timeline values have had two formats; a value that does
/// not decode is compared as it is, and differs.
fn comparable_value<'a>(key: &[u8], value: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
    if key.first() == Some(&keys::TIMELINE)
        && let Ok((_, at, event_id)) = keys::decode_timeline(key)
        && let Ok(entry) = TimelineEntry::decode_value(at, event_id, value)
    {
        let mut today = Vec::with_capacity(value.len());
        entry.encode_value_into(&mut today);
        return std::borrow::Cow::Owned(today);
    }
    std::borrow::Cow::Borrowed(value)
}

/// Compares two versions from one snapshot: their consumed offsets, a
/// checksum of their state (profiles, timelines, index, conflicts and source
/// watermarks) and the first keys that differ.
pub(crate) async fn verify(
    State(state): State<Arc<QueryState>>,
    params: Result<Query<VerifyParams>, QueryRejection>,
) -> Result<Json<VerifyReport>, ApiError> {
    let Query(params) =
        params.map_err(|rejection| bad_query(rejection, "use other= and optionally live="))?;
    let left_version = params.live.unwrap_or_else(|| state.versions.live());
    let left = state.versions.family_for(Some(&left_version))?;
    let right = state.versions.family_for(Some(&params.other))?;
    let topics = [
        state.versions.topic_of(&left_version),
        state.versions.topic_of(&params.other),
    ];
    let versions = state.versions.clone();
    let report = tokio::task::spawn_blocking(move || -> rapport_common::Result<VerifyReport> {
        let mut entries: [std::collections::BTreeMap<Vec<u8>, u64>; 2] = Default::default();
        let mut offsets: [std::collections::BTreeMap<Vec<u8>, Vec<u8>>; 2] = Default::default();
        let state_tags = [
            keys::PROFILE,
            keys::TIMELINE,
            keys::IDENTIFIER,
            keys::CONFLICT,
            keys::WATERMARK,
            keys::RETRIED,
            keys::OFFSET,
        ];
        versions
            .store()
            .visit_snapshot(&[&left, &right], &state_tags, |index, key, value| {
                if key[0] == keys::OFFSET {
                    offsets[index].insert(key.to_vec(), value.to_vec());
                } else {
                    let hash = stable_hash(&comparable_value(key, value));
                    entries[index].insert(key.to_vec(), hash);
                }
            })?;
        let checksum = |map: &std::collections::BTreeMap<Vec<u8>, u64>| {
            let mut digest = Digest::default();
            for (key, value) in map {
                digest.bytes(&(key.len() as u64).to_be_bytes());
                digest.bytes(key);
                digest.bytes(&value.to_be_bytes());
            }
            digest.hex()
        };
        let differing: Vec<String> = entries[0]
            .iter()
            .filter(|(key, value)| entries[1].get(*key) != Some(*value))
            .map(|(key, _)| key)
            .chain(
                entries[1]
                    .keys()
                    .filter(|key| !entries[0].contains_key(*key)),
            )
            .take(10)
            .map(|key| String::from_utf8_lossy(key).into_owned())
            .collect();
        let same_offsets = offsets[0] == offsets[1];
        Ok(VerifyReport {
            versions: [left, right],
            // Offsets are compared partition by partition, also across
            // topics: equal records at equal offsets (a graph
            // version's topic of an unchanged log) compare equal.
            topics,
            same_offsets,
            keys: [entries[0].len() as u64, entries[1].len() as u64],
            checksums: [checksum(&entries[0]), checksum(&entries[1])],
            identical: same_offsets && differing.is_empty(),
            first_differences: differing,
        })
    })
    .await
    .map_err(|error| ApiError::Internal(error.to_string()))??;
    Ok(Json(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_compares_timeline_values_of_either_format_by_what_they_say() {
        let entry = TimelineEntry {
            occurred_at_ms: 1_790_842_800_000,
            event_id: "01a20509-dcbb-76e3-933c-fe06ffcf0907".into(),
            event_type: "order.placed".into(),
            channel: "web".into(),
            summary: "order o-1 placed, 10.20 USD".into(),
        };
        let key = keys::timeline("c-1", entry.occurred_at_ms, &entry.event_id);
        let mut today = Vec::new();
        entry.encode_value_into(&mut today);
        let older = postcard::to_stdvec(&entry).unwrap();
        assert_ne!(today, older);
        assert_eq!(
            comparable_value(&key, &older).as_ref(),
            comparable_value(&key, &today).as_ref()
        );
        // A value that does not decode is compared as it is.
        assert_eq!(comparable_value(&key, b"\xff").as_ref(), b"\xff");
        // Other keys' values are compared as they are.
        assert_eq!(comparable_value(b"Pc-1", &older).as_ref(), older.as_slice());
    }
}
