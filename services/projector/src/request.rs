//! Refusing a request the same way on every route: a 400 that names the
//! field and the rule, a 404 that names what is missing.

use axum::extract::rejection::QueryRejection;
use rapport_common::http::{ApiError, FieldError};

pub(crate) fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("no customer {id}"))
}

/// Turns a query-string rejection into a 400 that says what is accepted.
pub(crate) fn bad_query(rejection: QueryRejection, usage: &str) -> ApiError {
    ApiError::Invalid {
        message: format!("{}; {usage}", rejection.body_text()),
        details: vec![],
    }
}

pub(crate) fn invalid_field(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid {
        message: format!("bad {field}"),
        details: vec![FieldError {
            index: None,
            field: field.to_owned(),
            message: message.into(),
        }],
    }
}
