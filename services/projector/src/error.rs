//! The projector's errors, and the one place where each kind becomes an
//! HTTP status.

use rapport_common::http::ApiError;

/// What went wrong, by whom it can be fixed: the caller (a name that does
/// not exist, a clash, a field breaking a rule), the data, or the plumbing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request names something that does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request clashes with what exists: a name taken, the live version
    /// asked to go (409).
    #[error("{0}")]
    Conflict(String),
    /// A field of the request breaks a rule; `field` names it (400).
    #[error("{message}")]
    Refused {
        field: &'static str,
        message: String,
    },
    /// The cluster could not be asked what the request needs; asking again
    /// later may work (503).
    #[error("{0}")]
    Unavailable(String),
    /// Storage or Kafka failed underneath (500; the message is logged).
    #[error(transparent)]
    Plumbing(#[from] rapport_common::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A [`Error::Refused`] naming `field`.
    pub fn refused(field: &'static str, message: impl Into<String>) -> Self {
        Error::Refused {
            field,
            message: message.into(),
        }
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        match error {
            Error::NotFound(message) => ApiError::NotFound(message),
            Error::Conflict(message) => ApiError::Conflict(message),
            Error::Refused { field, message } => crate::request::invalid_field(field, message),
            Error::Unavailable(message) => ApiError::Unavailable {
                message,
                retry_after_s: 5,
            },
            Error::Plumbing(error) => error.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

    #[test]
    fn each_kind_answers_its_status() {
        let status = |error: Error| ApiError::from(error).into_response().status().as_u16();
        assert_eq!(status(Error::NotFound("no version v9".into())), 404);
        assert_eq!(status(Error::Conflict("version v1 is live".into())), 409);
        assert_eq!(status(Error::refused("until", "in the future")), 400);
        assert_eq!(status(Error::Unavailable("no metadata".into())), 503);
        assert_eq!(
            status(Error::Plumbing(rapport_common::Error::Config("x".into()))),
            500
        );
    }
}
