//! The identity service's HTTP API: health, metrics, status, and
//! re-identification into graph versions (start, progress, compare, drop),
//! each route behind the key scope it needs.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::{Json, Router};
use rapport_common::apikeys::{Gate, RouteTable, Scope, ScopedRoutes};
use rapport_common::http::ApiError;
use rapport_common::http::PathParams;
use rapport_common::status::WorkerStatus;
use rapport_common::store::Store;

use crate::FAMILY;
use rapport_common::admin::{
    ErrorAnswer, GraphComparison, GraphDifference, GraphDropped, GraphVersion, GraphVersions,
    IdentityStatus, ReidentifyRequest,
};

use crate::versions::{LIVE_VERSION, VersionError, Versions};

/// What the handlers share.
pub struct AdminState {
    pub versions: Arc<Versions>,
    pub store: Store,
    /// The live resolver's status.
    pub status: Arc<WorkerStatus>,
    pub metrics: rapport_common::metrics::Registry,
    pub vault: Arc<crate::vault::Vault>,
    pub erasures: Arc<crate::erasure::Erasures>,
}

pub fn router(state: Arc<AdminState>, gate: &Gate) -> Router {
    routes(state, gate).0
}

/// [`router`], with the table of its routes and their scopes.
pub fn routes(state: Arc<AdminState>, gate: &Gate) -> (Router, RouteTable) {
    use Scope::{Admin, Open, Read, Service};
    let metrics = state.metrics.clone();
    let (routes, table) = rapport_common::openapi::finish_described(
        ScopedRoutes::new(gate)
            .get(Admin, "/v1/admin/status", status)
            .post(Admin, "/v1/admin/reidentify", reidentify)
            .get(Admin, "/v1/admin/versions", list_versions)
            .get(Admin, "/v1/admin/versions/{version}", one_version)
            .delete(Admin, "/v1/admin/versions/{version}", drop_version)
            .get(
                Admin,
                "/v1/admin/versions/{version}/compare",
                compare_version,
            )
            .get(
                Service,
                "/v1/vault/pseudonym-key",
                crate::vault_http::pseudonym_key,
            )
            .post(Service, "/v1/vault/keys", crate::vault_http::issue)
            .post(Service, "/v1/vault/keys/lookup", crate::vault_http::lookup)
            .post(Admin, "/v1/admin/erasures", crate::erasure_http::erase)
            .get(Admin, "/v1/admin/erasures", crate::erasure_http::list)
            .get(Admin, "/v1/admin/erasures/{id}", crate::erasure_http::show)
            .get(Open, "/healthz", healthz)
            .get(Read, "/metrics", render_metrics),
        <IdentityApi as utoipa::OpenApi>::openapi(),
        "identity",
        "The identity service: the identifier graph and its versions (re-identification), the vault of data keys, and erasure.",
    );
    let routes = routes
        .fallback(rapport_common::http::no_such_route)
        .with_state(state);
    (
        rapport_common::http::with_request_metrics(routes, &metrics, "identity"),
        table,
    )
}

impl axum::extract::FromRef<Arc<AdminState>> for crate::erasure_http::ErasureService {
    fn from_ref(state: &Arc<AdminState>) -> Self {
        Self(state.erasures.clone())
    }
}

impl axum::extract::FromRef<Arc<AdminState>> for crate::vault_http::VaultState {
    fn from_ref(state: &Arc<AdminState>) -> Self {
        Self(state.vault.clone())
    }
}

/// Every operation [`routes`] serves, described from the handlers.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    status,
    reidentify,
    list_versions,
    one_version,
    drop_version,
    compare_version,
    crate::vault_http::pseudonym_key,
    crate::vault_http::issue,
    crate::vault_http::lookup,
    crate::erasure_http::erase,
    crate::erasure_http::list,
    crate::erasure_http::show,
    healthz,
    render_metrics,
))]
struct IdentityApi;

#[utoipa::path(get, path = "/healthz", tag = "meta",
    responses((status = 200, description = "The service is up.", body = rapport_common::http::Health)))]
async fn healthz() -> Json<rapport_common::http::Health> {
    Json(rapport_common::http::Health::OK)
}

#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "Counters and gauges, OpenMetrics text.", content_type = "application/openmetrics-text", body = String)))]
async fn render_metrics(State(state): State<Arc<AdminState>>) -> axum::response::Response {
    state.metrics.response()
}

#[utoipa::path(get, path = "/v1/admin/status", tag = "admin",
    responses((status = 200, description = "The live resolver and every graph version.", body = IdentityStatus)))]
async fn status(State(state): State<Arc<AdminState>>) -> Json<IdentityStatus> {
    Json(IdentityStatus {
        service: "identity".to_owned(),
        graph_bytes: state.store.size_on_disk(FAMILY),
        compaction_pending_bytes: state.store.pending_compaction_bytes(FAMILY),
        consumer: state.status.report(),
        versions: state.versions.reports(),
    })
}

/// Runs blocking version work (RocksDB, broker admin calls) off the runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, VersionError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ApiError::Internal(error.to_string()))?
        .map_err(ApiError::from)
}

/// Starts re-identifying the raw topic into a new graph version, bounded by
/// the live resolver's committed offsets now.
#[utoipa::path(post, path = "/v1/admin/reidentify", tag = "admin", request_body = ReidentifyRequest,
    responses(
        (status = 201, description = "The version, started.", body = GraphVersion),
        (status = 400, description = "A bad body or version name.", body = ErrorAnswer),
        (status = 409, description = "The name is taken.", body = ErrorAnswer),
    ))]
async fn reidentify(
    State(state): State<Arc<AdminState>>,
    request: Result<Json<ReidentifyRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<GraphVersion>), ApiError> {
    let Json(request) = request.map_err(|rejection| ApiError::Invalid {
        message: format!("{}; send {{\"version\": \"NAME\"}}", rejection.body_text()),
        details: vec![],
    })?;
    let versions = state.versions.clone();
    let report = blocking(move || versions.create(request.version)).await?;
    Ok((StatusCode::CREATED, Json(report)))
}

#[utoipa::path(get, path = "/v1/admin/versions", tag = "admin",
    responses((status = 200, description = "The graph versions beside the live graph.", body = GraphVersions)))]
async fn list_versions(State(state): State<Arc<AdminState>>) -> Json<GraphVersions> {
    Json(GraphVersions {
        live: LIVE_VERSION.to_owned(),
        versions: state.versions.reports(),
    })
}

#[utoipa::path(get, path = "/v1/admin/versions/{version}", tag = "admin", params(("version" = String, Path, description = "A graph version's name.")),
    responses(
        (status = 200, description = "The version and its progress.", body = GraphVersion),
        (status = 404, description = "No such version.", body = ErrorAnswer),
    ))]
async fn one_version(
    State(state): State<Arc<AdminState>>,
    PathParams(version): PathParams<String>,
) -> Result<Json<GraphVersion>, ApiError> {
    Ok(Json(state.versions.report(&version)?))
}

#[utoipa::path(delete, path = "/v1/admin/versions/{version}", tag = "admin", params(("version" = String, Path, description = "A graph version's name.")),
    responses(
        (status = 200, description = "Dropped: its graph, baseline and customer topic.", body = GraphDropped),
        (status = 404, description = "No such version.", body = ErrorAnswer),
        (status = 409, description = "The live graph cannot be dropped.", body = ErrorAnswer),
    ))]
async fn drop_version(
    State(state): State<Arc<AdminState>>,
    PathParams(version): PathParams<String>,
) -> Result<Json<GraphDropped>, ApiError> {
    let versions = state.versions.clone();
    Ok(Json(
        blocking(move || versions.drop_version(&version)).await?,
    ))
}

/// The live graph as the version's baseline froze it against the version:
/// entry counts, checksums, offsets and the first differing keys.
#[utoipa::path(get, path = "/v1/admin/versions/{version}/compare", tag = "admin", params(("version" = String, Path, description = "A graph version's name.")),
    responses(
        (status = 200, description = "The comparison.", body = GraphComparison),
        (status = 404, description = "No such version.", body = ErrorAnswer),
        (status = 409, description = "The version has not finished.", body = ErrorAnswer),
    ))]
async fn compare_version(
    State(state): State<Arc<AdminState>>,
    PathParams(version): PathParams<String>,
) -> Result<Json<GraphComparison>, ApiError> {
    let versions = state.versions.clone();
    let name = version.clone();
    let comparison = blocking(move || versions.compare(&name)).await?;
    let only_in_version = format!("only in {version}");
    let differences: Vec<GraphDifference> = comparison
        .first_differences
        .iter()
        .map(|difference| {
            let what = match difference.difference {
                "only in left" => "only in the live graph",
                "only in right" => only_in_version.as_str(),
                other => other,
            };
            GraphDifference {
                key: difference.key.clone(),
                difference: what.to_owned(),
            }
        })
        .collect();
    Ok(Json(GraphComparison {
        versions: [LIVE_VERSION.to_owned(), version],
        equal: comparison.equal,
        live: comparison.left,
        version: comparison.right,
        first_differences: differences,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use rapport_common::config::Config;
    use tower::ServiceExt as _;

    /// The service's state over fresh stores in `directory`. Nothing
    /// listens at its broker address: the refusals the tests expect must
    /// come before any broker call.
    fn state(directory: &std::path::Path) -> Arc<AdminState> {
        let store = Store::open(&directory.join("identity"), &[FAMILY]).unwrap();
        let mut config = Config::default();
        config.kafka.brokers = "127.0.0.1:1".to_owned();
        let versions = Versions::start(
            config,
            store.clone(),
            directory.join("identity.baselines"),
            Default::default(),
        )
        .unwrap();
        let vault = Arc::new(crate::vault::Vault::open(&directory.join("vault")).unwrap());
        Arc::new(AdminState {
            versions,
            store: store.clone(),
            status: WorkerStatus::new("raw"),
            metrics: Default::default(),
            vault: vault.clone(),
            erasures: Arc::new(crate::erasure::Erasures::open(store, vault).unwrap()),
        })
    }

    fn app(directory: &std::path::Path) -> Router {
        router(state(directory), &Gate::open_for_tests())
    }

    #[tokio::test]
    async fn every_route_checks_its_key_scope() {
        let directory = tempfile::tempdir().unwrap();
        let state = state(directory.path());
        rapport_fuzzing::every_route_checks_its_scope(|gate| routes(state.clone(), gate)).await;
    }

    #[tokio::test]
    async fn the_openapi_document_describes_every_route() {
        let directory = tempfile::tempdir().unwrap();
        let (router, table) = routes(state(directory.path()), &Gate::open_for_tests());
        let router_again = router.clone();
        let document = rapport_fuzzing::describes_every_route(router, &table).await;
        assert_eq!(document["info"]["title"], "Rapport identity");
        let erase = &document["paths"]["/v1/admin/erasures"]["post"];
        assert_eq!(
            erase["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErasureRequest"
        );
        assert!(erase["responses"]["201"].is_object(), "{erase}");
        // The documented example is a request the handler takes: no person
        // has that email here, so 404, not a refusal of the body
        let example = document["components"]["schemas"]["ErasureRequest"]["example"].to_string();
        let (status, answer) = call(
            &router_again,
            Request::post("/v1/admin/erasures")
                .header("content-type", "application/json")
                .body(Body::from(example))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    }

    async fn call(app: &Router, request: Request<Body>) -> (StatusCode, serde_json::Value) {
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    fn post(body: &str) -> Request<Body> {
        Request::post("/v1/admin/reidentify")
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    #[tokio::test]
    async fn bad_requests_are_refused_with_the_rule_broken_and_create_nothing() {
        let directory = tempfile::tempdir().unwrap();
        let app = app(directory.path());
        let (status, body) = call(&app, post(r#"{"version": "no spaces"}"#)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["details"][0]["field"], "version");
        assert!(
            body["details"][0]["message"]
                .as_str()
                .unwrap()
                .contains("letters, digits"),
            "{body}"
        );
        let (status, body) = call(&app, post(r#"{"version": "v1"}"#)).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(body["error"].as_str().unwrap().contains("live"), "{body}");
        let (status, body) = call(&app, post(r#"{"versoin": "r2"}"#)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("versoin"),
            "{body}"
        );

        let (status, body) = call(
            &app,
            Request::get("/v1/admin/versions")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["versions"], serde_json::json!([]), "nothing created");
        assert!(!directory.path().join("identity.baselines").exists());
        for uri in ["/v1/admin/versions/r9", "/v1/admin/versions/r9/compare"] {
            let (status, _) = call(&app, Request::get(uri).body(Body::empty()).unwrap()).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        }
        let (status, _) = call(
            &app,
            Request::delete("/v1/admin/versions/r9")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = call(
            &app,
            Request::delete("/v1/admin/versions/v1")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "the live graph stays: {body}");
    }

    /// Fuzz-style: any version name in a path and any body to
    /// `POST /v1/admin/reidentify` that names no valid new version gets a
    /// 4xx JSON error, never a 5xx or a panic (a valid name would go on to
    /// the broker, which this test has none of).
    #[test]
    fn fuzz_no_path_or_body_gets_a_5xx() {
        use proptest::prelude::*;
        use proptest::test_runner::TestRunner;

        let directory = tempfile::tempdir().unwrap();
        let app = app(directory.path());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let valid_name = |text: &str| {
            (1..=64).contains(&text.len())
                && text
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        };
        let name = prop_oneof![
            any::<String>(),
            "[a-z0-9_ -]{0,8}",
            "(%[0-9A-F]{2}){1,4}",
            Just("v1".to_owned())
        ];
        let body = prop_oneof![
            any::<Vec<u8>>(),
            name.clone()
                .prop_map(|name| serde_json::json!({ "version": name })
                    .to_string()
                    .into_bytes()),
            any::<i64>().prop_map(|number| format!("{{\"version\": {number}}}").into_bytes()),
        ];
        let strategy = (0..4usize, name, body);
        TestRunner::new(rapport_fuzzing::config())
            .run(&strategy, |(route, name, body)| {
                let segment = rapport_fuzzing::uri_text(&name);
                let request = match route {
                    0 => Request::get(format!("/v1/admin/versions/{segment}")).body(Body::empty()),
                    1 => Request::get(format!("/v1/admin/versions/{segment}/compare"))
                        .body(Body::empty()),
                    2 => {
                        Request::delete(format!("/v1/admin/versions/{segment}")).body(Body::empty())
                    }
                    _ => {
                        let named = serde_json::from_slice::<serde_json::Value>(&body)
                            .ok()
                            .and_then(|value| value["version"].as_str().map(str::to_owned));
                        if named.is_some_and(|name| valid_name(&name) && name != "v1") {
                            return Ok(());
                        }
                        Request::post("/v1/admin/reidentify")
                            .header("content-type", "application/json")
                            .body(Body::from(body))
                    }
                }
                .expect("a request");
                let (status, answer) = runtime.block_on(call(&app, request));
                prop_assert!(
                    status.is_client_error(),
                    "{route} {name:?}: {status} {answer}"
                );
                prop_assert!(
                    answer["error"]
                        .as_str()
                        .is_some_and(|error| !error.is_empty()),
                    "{route} {name:?}: {status} {answer}"
                );
                Ok(())
            })
            .unwrap();
    }

    /// Any body to the erasure and vault routes, and any erasure id: a 2xx
    /// or a 4xx JSON error, never a 5xx. (An empty graph knows nobody, so
    /// an erasure that parses is a 404.)
    #[test]
    fn fuzz_no_erasure_or_vault_request_gets_a_5xx() {
        use proptest::prelude::*;
        use proptest::test_runner::TestRunner;

        let directory = tempfile::tempdir().unwrap();
        let app = app(directory.path());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let value = prop_oneof![
            any::<String>().prop_map(serde_json::Value::String),
            any::<i64>().prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
            "p_[0-9a-f]{32}".prop_map(serde_json::Value::String),
        ];
        let field = prop_oneof![
            Just("customer_id"),
            Just("email"),
            Just("phone"),
            Just("anonymous_id"),
            Just("subjects"),
            Just("keys"),
            Just("name"),
        ];
        let body = prop_oneof![
            any::<Vec<u8>>(),
            proptest::collection::vec((field, value.clone()), 0..3).prop_map(|fields| {
                serde_json::Value::Object(
                    fields
                        .into_iter()
                        .map(|(name, value)| (name.to_owned(), value))
                        .collect(),
                )
                .to_string()
                .into_bytes()
            }),
            proptest::collection::vec(value, 0..4).prop_map(|values| {
                serde_json::json!({ "subjects": values.clone(), "keys": [{"subject": values.first(), "key_id": values.last()}] })
                    .to_string()
                    .into_bytes()
            }),
        ];
        let strategy = (0..4usize, any::<String>(), body);
        TestRunner::new(rapport_fuzzing::config())
            .run(&strategy, |(route, id, body)| {
                let json = |path: &str| {
                    Request::post(path)
                        .header("content-type", "application/json")
                        .body(Body::from(body.clone()))
                };
                let request = match route {
                    0 => json("/v1/admin/erasures"),
                    1 => json("/v1/vault/keys"),
                    2 => json("/v1/vault/keys/lookup"),
                    _ => Request::get(format!(
                        "/v1/admin/erasures/{}",
                        rapport_fuzzing::uri_text(&id)
                    ))
                    .body(Body::empty()),
                }
                .expect("a request");
                let (status, answer) = runtime.block_on(call(&app, request));
                prop_assert!(
                    status.is_success() || status.is_client_error(),
                    "{route}: {status} {answer}"
                );
                if status.is_client_error() {
                    prop_assert!(
                        answer["error"]
                            .as_str()
                            .is_some_and(|error| !error.is_empty()),
                        "{route}: {status} {answer}"
                    );
                }
                Ok(())
            })
            .unwrap();
    }
}
