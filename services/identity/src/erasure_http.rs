//! `POST /v1/admin/erasures`, `GET /v1/admin/erasures` (the audit trail)
//! and `GET /v1/admin/erasures/{id}`, for admin keys.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::{Extension, Json};
use rapport_common::apikeys::Caller;
use rapport_common::http::{ApiError, FieldError, PathParams};
use rapport_common::privacy::pseudonym;
use rapport_projections::identity::{Identifier, IdentifierKind};
use rapport_projections::time::format_rfc3339;
use serde::Serialize;

use crate::erasure::{ErasureError, ErasureRecord, Erasures};

/// What the erasure handlers need of the service's state.
#[derive(Clone)]
pub(crate) struct ErasureService(pub(crate) Arc<Erasures>);

/// An erasure as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ErasureAnswer {
    erasure_id: String,
    state: crate::erasure::ErasureState,
    requested_at: String,
    done_at: Option<String>,
    requested_by: Option<String>,
    person: String,
    identifiers: usize,
    keys_destroyed: usize,
    /// Per raw partition, the last offset the erased person's identifiers
    /// belong to them at; later events start a new person.
    cut: Vec<i64>,
}

impl From<ErasureRecord> for ErasureAnswer {
    fn from(record: ErasureRecord) -> Self {
        Self {
            erasure_id: record.id,
            state: record.state,
            requested_at: format_rfc3339(record.requested_at_ms),
            done_at: record.done_at_ms.map(format_rfc3339),
            requested_by: record.requested_by,
            person: record.person,
            identifiers: record.identifiers,
            keys_destroyed: record.keys_destroyed,
            cut: record.cut,
        }
    }
}

fn refused(field: &str, message: &str) -> ApiError {
    ApiError::Invalid {
        message: "the request is invalid; nothing was erased".to_owned(),
        details: vec![FieldError {
            index: None,
            field: field.to_owned(),
            message: message.to_owned(),
        }],
    }
}

const KINDS: [IdentifierKind; 4] = [
    IdentifierKind::CustomerId,
    IdentifierKind::Email,
    IdentifierKind::Phone,
    IdentifierKind::AnonymousId,
];

/// The one identifier a request names, normalised.
fn named_identifier(body: &serde_json::Value) -> Result<Identifier, ApiError> {
    let Some(object) = body.as_object() else {
        return Err(refused(
            "body",
            "send an object naming one of customer_id, email, phone, anonymous_id",
        ));
    };
    if let Some(unknown) = object
        .keys()
        .find(|key| !KINDS.iter().any(|kind| kind.as_str() == key.as_str()))
    {
        return Err(refused(
            unknown,
            "is not customer_id, email, phone or anonymous_id",
        ));
    }
    let mut named = KINDS
        .iter()
        .filter_map(|kind| object.get(kind.as_str()).map(|value| (*kind, value)));
    let (Some((kind, value)), None) = (named.next(), named.next()) else {
        return Err(refused(
            "body",
            "name exactly one of customer_id, email, phone, anonymous_id",
        ));
    };
    let text = value
        .as_str()
        .ok_or_else(|| refused(kind.as_str(), "must be a string"))?;
    Identifier::normalised(kind, text).ok_or_else(|| refused(kind.as_str(), "is empty"))
}

// The handler reads the body as JSON itself, to name the field of any
// refusal; this type describes it for the API document, and the document
// test posts its example to the handler.
/// The person to erase, by exactly one of their identifiers, as the shop
/// knows it.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(example = json!({"email": "ada@example.com"}))]
pub(crate) struct ErasureRequest {
    #[schema(nullable = false)]
    customer_id: Option<String>,
    #[schema(nullable = false)]
    email: Option<String>,
    #[schema(nullable = false)]
    phone: Option<String>,
    #[schema(nullable = false)]
    anonymous_id: Option<String>,
}

/// Erases the person an identifier belongs to: destroys the data keys of
/// every identifier linked to them (see docs/privacy.md).
#[utoipa::path(post, path = "/v1/admin/erasures", tag = "erasure", request_body = ErasureRequest,
    responses(
        (status = 201, description = "Done: the erasure's record.", body = ErasureAnswer),
        (status = 400, description = "The body does not name exactly one identifier; nothing was erased.", body = rapport_common::admin::ErrorAnswer),
        (status = 404, description = "No person has the identifier.", body = rapport_common::admin::ErrorAnswer),
        (status = 503, description = "The resolver did not finish its batch in time; nothing was erased.", body = rapport_common::admin::ErrorAnswer),
    ))]
pub(crate) async fn erase(
    State(ErasureService(erasures)): State<ErasureService>,
    caller: Option<Extension<Caller>>,
    request: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<(StatusCode, Json<ErasureAnswer>), ApiError> {
    let Json(body) = request.map_err(|rejection| refused("body", &rejection.body_text()))?;
    let named = named_identifier(&body)?;
    let kind = named.kind;
    let identifier = Identifier::new(
        kind,
        pseudonym(erasures.pseudonym_key(), kind.as_str(), &named.value),
    );
    let requested_by = caller.map(|Extension(caller)| caller.key_id);
    let id = uuid::Uuid::now_v7().to_string();
    let now_ms = rapport_common::now_ms();
    let record =
        tokio::task::spawn_blocking(move || erasures.erase(&identifier, requested_by, id, now_ms))
            .await
            .map_err(|error| ApiError::Internal(error.to_string()))?
            .map_err(|error| match error {
                ErasureError::UnknownPerson => {
                    ApiError::NotFound(format!("no person has this {}", kind.as_str()))
                }
                busy @ ErasureError::Busy(_) => ApiError::Unavailable {
                    message: busy.to_string(),
                    retry_after_s: 10,
                },
                other => ApiError::Internal(other.to_string()),
            })?;
    tracing::info!(erasure = %record.id, person = %record.person, keys_destroyed = record.keys_destroyed, "erased a person");
    Ok((StatusCode::CREATED, Json(record.into())))
}

/// Every erasure on record, oldest first: the audit trail.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ErasureList {
    erasures: Vec<ErasureAnswer>,
}

#[utoipa::path(get, path = "/v1/admin/erasures", tag = "erasure",
    responses((status = 200, description = "Every erasure on record, oldest first.", body = ErasureList)))]
pub(crate) async fn list(
    State(ErasureService(erasures)): State<ErasureService>,
) -> Result<Json<ErasureList>, ApiError> {
    let mut records = tokio::task::spawn_blocking(move || erasures.all())
        .await
        .map_err(|error| ApiError::Internal(error.to_string()))?
        .map_err(|error| ApiError::Internal(error.to_string()))?;
    records.sort_by(|a, b| (a.requested_at_ms, &a.id).cmp(&(b.requested_at_ms, &b.id)));
    Ok(Json(ErasureList {
        erasures: records.into_iter().map(ErasureAnswer::from).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/admin/erasures/{id}", tag = "erasure",
    params(("id" = String, Path, description = "The erasure id.")),
    responses(
        (status = 200, description = "The erasure's record.", body = ErasureAnswer),
        (status = 404, description = "No such erasure.", body = rapport_common::admin::ErrorAnswer),
    ))]
pub(crate) async fn show(
    State(ErasureService(erasures)): State<ErasureService>,
    PathParams(id): PathParams<String>,
) -> Result<Json<ErasureAnswer>, ApiError> {
    let record = tokio::task::spawn_blocking(move || erasures.get(&id).map(|record| (id, record)))
        .await
        .map_err(|error| ApiError::Internal(error.to_string()))?
        .map_err(|error| ApiError::Internal(error.to_string()))?;
    match record {
        (_, Some(record)) => Ok(Json(record.into())),
        (id, None) => Err(ApiError::NotFound(format!("no erasure {id}"))),
    }
}
