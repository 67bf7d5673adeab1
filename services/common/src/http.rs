//! The one error type HTTP handlers return, and the JSON shape of errors:
//! `{"error": "...", "details": [{"index": i, "field": "...", "message": "..."}]}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One broken rule in a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Position of the event in the batch, when the error is about one event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub field: String,
    pub message: String,
}

#[derive(Debug)]
pub enum ApiError {
    /// 400: the request breaks the rules listed in `details`.
    Invalid {
        message: String,
        details: Vec<FieldError>,
    },
    /// 401 with `WWW-Authenticate`: no key, or one that is unknown,
    /// revoked or expired.
    Unauthorized(String),
    /// 403: a key that may not call this route; the message names the
    /// scope the route needs.
    Forbidden(String),
    /// 404.
    NotFound(String),
    /// 408: the body did not arrive in time.
    RequestTimeout(String),
    /// 409: the request clashes with what exists (a name already taken, a
    /// job not finished yet).
    Conflict(String),
    /// 413.
    TooLarge(String),
    /// 422: the request is well-formed but cannot be answered from the data
    /// (e.g. too few customers to fit a model).
    Unprocessable(String),
    /// 415.
    UnsupportedMediaType(String),
    /// 429 with `Retry-After`: the key (or, for failed logins, the client
    /// address) used up its rate.
    TooManyRequests { message: String, retry_after_s: u64 },
    /// 503 with `Retry-After`.
    Unavailable { message: String, retry_after_s: u64 },
    /// 500: something broke on our side; the message is logged, not shown.
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    details: &'a [FieldError],
}

impl ApiError {
    /// The status this error answers with, what it says, and the fields
    /// it names (shown as JSON by the API, as a page by the dashboard).
    pub fn parts(&self) -> (StatusCode, &str, &[FieldError]) {
        match self {
            ApiError::Invalid { message, details } => (
                StatusCode::BAD_REQUEST,
                message.as_str(),
                details.as_slice(),
            ),
            ApiError::Unauthorized(message) => {
                (StatusCode::UNAUTHORIZED, message.as_str(), &[][..])
            }
            ApiError::Forbidden(message) => (StatusCode::FORBIDDEN, message.as_str(), &[][..]),
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, message.as_str(), &[][..]),
            ApiError::RequestTimeout(message) => {
                (StatusCode::REQUEST_TIMEOUT, message.as_str(), &[][..])
            }
            ApiError::TooManyRequests { message, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, message.as_str(), &[][..])
            }
            ApiError::Conflict(message) => (StatusCode::CONFLICT, message.as_str(), &[][..]),
            ApiError::TooLarge(message) => {
                (StatusCode::PAYLOAD_TOO_LARGE, message.as_str(), &[][..])
            }
            ApiError::Unprocessable(message) => {
                (StatusCode::UNPROCESSABLE_ENTITY, message.as_str(), &[][..])
            }
            ApiError::UnsupportedMediaType(message) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message.as_str(),
                &[][..],
            ),
            ApiError::Unavailable { message, .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, message.as_str(), &[][..])
            }
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error, see the service log",
                &[][..],
            ),
        }
    }

    /// The `Retry-After` seconds a 429 or 503 carries.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            ApiError::Unavailable { retry_after_s, .. }
            | ApiError::TooManyRequests { retry_after_s, .. } => Some(*retry_after_s),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(message) = &self {
            tracing::error!(error = %message, "internal error answering a request");
        }
        let (status, message, details) = self.parts();
        let mut response = (
            status,
            Json(ErrorBody {
                error: message,
                details,
            }),
        )
            .into_response();
        match self {
            ApiError::Unavailable { retry_after_s, .. }
            | ApiError::TooManyRequests { retry_after_s, .. } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
            }
            ApiError::Unauthorized(_) => {
                // RFC 6750 for the bearer key; RFC 7617 for tracking SDKs
                // that send the key as the Basic user name.
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"rapport\", Basic realm=\"rapport\""),
                );
            }
            _ => {}
        }
        response
    }
}

impl From<crate::Error> for ApiError {
    fn from(error: crate::Error) -> Self {
        match error {
            crate::Error::Unavailable(message) => ApiError::Unavailable {
                message,
                retry_after_s: 1,
            },
            error => ApiError::Internal(error.to_string()),
        }
    }
}

/// Times every request `router` answers into the histogram
/// `rapport_http_request_duration_seconds`, labelled with the service, the
/// method, the route as declared (`/v1/customers/{customer_id}`, so that
/// ids do not make series) and the status: a route's p99 is
/// `histogram_quantile(0.99, …)` in Prometheus.
pub fn with_request_metrics(
    router: axum::Router,
    registry: &crate::metrics::Registry,
    service: &'static str,
) -> axum::Router {
    let registry = registry.clone();
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let registry = registry.clone();
            async move {
                let route = request
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map_or("unmatched", |path| path.as_str())
                    .to_owned();
                let method = request.method().as_str().to_owned();
                let started = std::time::Instant::now();
                let response = next.run(request).await;
                let status = response.status();
                registry
                    .histogram(
                        "rapport_http_request_duration_seconds",
                        "Time to answer an HTTP request, by service, method, declared route and status.",
                        crate::metrics::seconds_buckets,
                        &[
                            ("service", service),
                            ("method", &method),
                            ("route", &route),
                            ("status", status.as_str()),
                        ],
                    )
                    .observe(started.elapsed().as_secs_f64());
                response
            }
        },
    ))
}

/// The answer to a path no route serves: a JSON 404 like every other
/// refusal, rather than an empty body.
pub async fn no_such_route(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!(
        "no route {}; docs/http-api.md lists them",
        uri.path()
    ))
}

/// Axum's `Path`, refusing a path that does not parse (bytes that are no
/// UTF-8, say) with a JSON 400 naming the path, like every other refusal.
pub struct PathParams<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for PathParams<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::Invalid {
                message: "bad path".to_owned(),
                details: vec![FieldError {
                    index: None,
                    field: "path".to_owned(),
                    message: rejection.body_text(),
                }],
            }),
        }
    }
}

/// What `/healthz` answers while a service is up.
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

impl Health {
    pub const OK: Self = Self { status: "ok" };
}
