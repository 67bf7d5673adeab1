//! The OpenAPI 3.1 description of a service's HTTP API, served at
//! `/openapi.json`.
//!
//! Operations, parameters and schemas come from the handlers'
//! `#[utoipa::path]` attributes and their types' `utoipa::ToSchema`, so a
//! changed answer type changes the document. What no attribute repeats is
//! added here from the route table that [`ScopedRoutes`] builds with the
//! router: the key scope of every operation (its security requirement and
//! 401/403/429 answers). The tests compare the table with the document both
//! ways (see [`mismatches`]), so a route cannot go undescribed.
//!
//! [`ScopedRoutes`]: crate::apikeys::ScopedRoutes

use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{OpenApi, Ref, RefOr, ResponseBuilder};

use std::sync::{Arc, OnceLock};

use axum::Router;

use crate::apikeys::{RouteInfo, RouteTable, Scope, ScopedRoutes};

/// The security scheme every keyed operation names.
pub const KEY_SCHEME: &str = "api_key";
/// The scheme of tracking SDKs: the write key as the Basic user name.
pub const BASIC_SCHEME: &str = "write_key_basic";
/// Where a service serves its description.
pub const PATH: &str = "/openapi.json";

/// The error body every refusal has, as a reusable response.
const ERROR_SCHEMA: &str = "ErrorAnswer";

fn method_of(route: &RouteInfo) -> Option<HttpMethod> {
    match route.method {
        "GET" => Some(HttpMethod::Get),
        "POST" => Some(HttpMethod::Post),
        "DELETE" => Some(HttpMethod::Delete),
        "PUT" => Some(HttpMethod::Put),
        "PATCH" => Some(HttpMethod::Patch),
        _ => None,
    }
}

fn operation_mut<'a>(api: &'a mut OpenApi, route: &RouteInfo) -> Option<&'a mut Operation> {
    let item = api.paths.paths.get_mut(route.path)?;
    match method_of(route)? {
        HttpMethod::Get => item.get.as_mut(),
        HttpMethod::Post => item.post.as_mut(),
        HttpMethod::Delete => item.delete.as_mut(),
        HttpMethod::Put => item.put.as_mut(),
        HttpMethod::Patch => item.patch.as_mut(),
        _ => None,
    }
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ERROR_SCHEMA)))
                .build(),
        )
        .build()
        .into()
}

/// `routes` finished, serving at [`PATH`] (no key) the description of
/// every route: `api`, from the handlers' attributes, completed from the
/// route table (see [`describe`]).
pub fn finish_described<S: Clone + Send + Sync + 'static>(
    routes: ScopedRoutes<S>,
    api: OpenApi,
    service: &str,
    summary: &str,
) -> (Router<S>, RouteTable) {
    // The document needs the finished table, which includes its own route.
    let document: Arc<OnceLock<String>> = Arc::default();
    let served = document.clone();
    let (router, table) = routes
        .get(Scope::Open, PATH, move || {
            let served = served.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    served.get().cloned().unwrap_or_default(),
                )
            }
        })
        .finish();
    let json = describe(api, &table, service, summary)
        .to_json()
        .expect("an OpenAPI document serialises");
    document.set(json).expect("the document is set once");
    (router, table)
}

/// `api` (what the handlers' attributes describe) completed from `table`:
/// title and version, the key schemes, and for every keyed route its
/// scope and the refusals the key gate answers.
pub fn describe(mut api: OpenApi, table: &RouteTable, service: &str, summary: &str) -> OpenApi {
    api.info.title = format!("Rapport {service}");
    api.info.description = Some(summary.to_owned());
    api.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        KEY_SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API key, `Authorization: Bearer rk_<kind>_…`. Each operation names the \
                     scope it needs: `events:write` (write keys), `read` (read and admin keys), \
                     `admin` (admin keys), `service` (service and admin keys).",
                ))
                .build(),
        ),
    );
    if table.iter().any(|route| route.scope == Scope::Write) {
        components.add_security_scheme(
            BASIC_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "The write key as the HTTP Basic user name, empty password: what \
                         tracking SDKs send.",
                    ))
                    .build(),
            ),
        );
    }
    components.schemas.insert(
        ERROR_SCHEMA.to_owned(),
        <crate::admin::ErrorAnswer as utoipa::PartialSchema>::schema(),
    );
    for (name, schema) in error_schemas() {
        components.schemas.entry(name).or_insert(schema);
    }
    if table.iter().any(|route| route.path == PATH) && !described(&api, "GET", PATH) {
        let operation = utoipa::openapi::path::OperationBuilder::new()
            .summary(Some("This description: OpenAPI 3.1, as JSON."))
            .tag("meta")
            .response(
                "200",
                ResponseBuilder::new().description("The OpenAPI document."),
            )
            .build();
        api.paths
            .add_path_operation(PATH, vec![HttpMethod::Get], operation);
    }
    for route in table {
        let Some(operation) = operation_mut(&mut api, route) else {
            continue;
        };
        if route.scope == Scope::Open {
            operation.security = Some(vec![SecurityRequirement::default()]);
            continue;
        }
        let scope = [route.scope.as_str()];
        let mut requirements = vec![SecurityRequirement::new(KEY_SCHEME, scope)];
        if route.scope == Scope::Write {
            requirements.push(SecurityRequirement::new(BASIC_SCHEME, scope));
        }
        operation.security = Some(requirements);
        let responses = &mut operation.responses.responses;
        for (status, description) in [
            (
                "401",
                "No key, or one that is unknown, revoked or expired (`WWW-Authenticate` says how to send one).",
            ),
            (
                "403",
                "A key of a kind that may not call this operation; the error names the scope needed.",
            ),
            (
                "429",
                "The key (or, for failed authentication, the client address) used up its rate; `Retry-After` says when to try again.",
            ),
        ] {
            responses
                .entry(status.to_owned())
                .or_insert_with(|| error_response(description));
        }
    }
    api
}

/// The schemas [`ErrorAnswer`](crate::admin::ErrorAnswer) refers to.
fn error_schemas() -> Vec<(String, RefOr<utoipa::openapi::schema::Schema>)> {
    let mut schemas = Vec::new();
    <crate::admin::ErrorAnswer as utoipa::ToSchema>::schemas(&mut schemas);
    schemas
}

/// Where `api` and `table` disagree: routes the document does not
/// describe, and operations no route serves. Empty when they agree.
pub fn mismatches(api: &OpenApi, table: &RouteTable) -> Vec<String> {
    let mut found = Vec::new();
    for route in table {
        if !described(api, route.method, route.path) {
            found.push(format!("{} {} is not described", route.method, route.path));
        }
    }
    for (path, item) in &api.paths.paths {
        for (method, present) in [
            ("GET", item.get.is_some()),
            ("POST", item.post.is_some()),
            ("DELETE", item.delete.is_some()),
            ("PUT", item.put.is_some()),
            ("PATCH", item.patch.is_some()),
        ] {
            let routed = table
                .iter()
                .any(|route| route.method == method && route.path == path);
            if present && !routed {
                found.push(format!("{method} {path} is described but not routed"));
            }
        }
    }
    found
}

fn described(api: &OpenApi, method: &str, path: &str) -> bool {
    api.paths.paths.get(path).is_some_and(|item| match method {
        "GET" => item.get.is_some(),
        "POST" => item.post.is_some(),
        "DELETE" => item.delete.is_some(),
        "PUT" => item.put.is_some(),
        "PATCH" => item.patch.is_some(),
        _ => false,
    })
}
