//! The vault's routes, for Rapport's own services (service keys): the
//! pseudonym key, data keys issued by subject, and data keys looked up by
//! id. Keys travel as hex in JSON; put TLS in front of identity wherever
//! the network between the services is not private.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use rapport_common::http::{ApiError, FieldError};
use rapport_common::privacy::{
    IssueRequest, KeyAnswer, KeysAnswer, LookupRequest, MAX_KEYS_PER_REQUEST, PseudonymKeyAnswer,
    is_pseudonym,
};

use crate::vault::Vault;

/// What the vault's handlers need of the service's state.
#[derive(Clone)]
pub(crate) struct VaultState(pub(crate) Arc<Vault>);

fn refused(field: String, message: &str) -> ApiError {
    ApiError::Invalid {
        message: "the request is invalid".to_owned(),
        details: vec![FieldError {
            index: None,
            field,
            message: message.to_owned(),
        }],
    }
}

fn body<T>(request: Result<Json<T>, JsonRejection>, shape: &str) -> Result<T, ApiError> {
    request
        .map(|Json(body)| body)
        .map_err(|rejection| ApiError::Invalid {
            message: format!("{}; send {shape}", rejection.body_text()),
            details: vec![FieldError {
                index: None,
                field: "body".to_owned(),
                message: rejection.body_text(),
            }],
        })
}

fn check_count(count: usize, field: &str) -> Result<(), ApiError> {
    if count > MAX_KEYS_PER_REQUEST {
        return Err(refused(
            field.to_owned(),
            &format!("at most {MAX_KEYS_PER_REQUEST} a request"),
        ));
    }
    Ok(())
}

fn check_subject(subject: &str, field: String) -> Result<(), ApiError> {
    if is_pseudonym(subject) {
        Ok(())
    } else {
        Err(refused(
            field,
            "must be a pseudonym: p_ and 32 lowercase hex digits",
        ))
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, crate::vault::VaultError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ApiError::Internal(error.to_string()))?
        .map_err(|error| ApiError::Internal(error.to_string()))
}

/// The key every service computes pseudonyms with.
#[utoipa::path(get, path = "/v1/vault/pseudonym-key", tag = "vault",
    responses((status = 200, description = "64 hex digits.", body = PseudonymKeyAnswer)))]
pub(crate) async fn pseudonym_key(
    State(VaultState(vault)): State<VaultState>,
) -> Json<PseudonymKeyAnswer> {
    Json(PseudonymKeyAnswer {
        key: vault.pseudonym_key().to_hex(),
    })
}

/// The data key of each subject, made for those that have none yet.
#[utoipa::path(post, path = "/v1/vault/keys", tag = "vault", request_body = IssueRequest,
    responses(
        (status = 200, description = "One key per subject, in the order asked.", body = KeysAnswer),
        (status = 400, description = "A subject that is no pseudonym, or too many.", body = rapport_common::admin::ErrorAnswer),
    ))]
pub(crate) async fn issue(
    State(VaultState(vault)): State<VaultState>,
    request: Result<Json<IssueRequest>, JsonRejection>,
) -> Result<Json<KeysAnswer>, ApiError> {
    let request = body(request, "{\"subjects\": [\"p_…\"]}")?;
    check_count(request.subjects.len(), "subjects")?;
    for (index, subject) in request.subjects.iter().enumerate() {
        check_subject(subject, format!("subjects[{index}]"))?;
    }
    let issued = blocking(move || vault.issue(&request.subjects)).await?;
    Ok(Json(KeysAnswer {
        keys: issued
            .into_iter()
            .map(|issued| KeyAnswer {
                subject: issued.subject,
                key_id: issued.key_id,
                key: Some(issued.key.to_hex()),
            })
            .collect(),
    }))
}

/// These data keys, `null` where the vault has none (destroyed or never made).
#[utoipa::path(post, path = "/v1/vault/keys/lookup", tag = "vault", request_body = LookupRequest,
    responses(
        (status = 200, description = "One answer per key, in the order asked.", body = KeysAnswer),
        (status = 400, description = "A malformed subject or key id, or too many.", body = rapport_common::admin::ErrorAnswer),
    ))]
pub(crate) async fn lookup(
    State(VaultState(vault)): State<VaultState>,
    request: Result<Json<LookupRequest>, JsonRejection>,
) -> Result<Json<KeysAnswer>, ApiError> {
    let request = body(
        request,
        "{\"keys\": [{\"subject\": \"p_…\", \"key_id\": \"…\"}]}",
    )?;
    check_count(request.keys.len(), "keys")?;
    for (index, key) in request.keys.iter().enumerate() {
        check_subject(&key.subject, format!("keys[{index}].subject"))?;
        if key.key_id.is_empty()
            || key.key_id.len() > 64
            || !key.key_id.bytes().all(|byte| byte.is_ascii_hexdigit())
        {
            return Err(refused(
                format!("keys[{index}].key_id"),
                "must be hex digits, at most 64",
            ));
        }
    }
    let wanted: Vec<(String, String)> = request
        .keys
        .iter()
        .map(|key| (key.subject.clone(), key.key_id.clone()))
        .collect();
    let found = blocking(move || vault.lookup(&wanted)).await?;
    Ok(Json(KeysAnswer {
        keys: request
            .keys
            .into_iter()
            .zip(found)
            .map(|(key, found)| KeyAnswer {
                subject: key.subject,
                key_id: key.key_id,
                key: found.map(|key| key.to_hex()),
            })
            .collect(),
    }))
}
