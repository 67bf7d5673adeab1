//! The projector's HTTP API: every route and the handler behind it.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::query::{self, QueryState};
use crate::scores_http;

/// The query HTTP API.
pub fn router(state: Arc<QueryState>) -> Router {
    let registry = state.registry.clone();
    let routes = Router::new()
        .route("/v1/customers", get(query::find_customer))
        .route("/v1/customers/{customer_id}", get(query::get_customer))
        .route(
            "/v1/customers/{customer_id}/timeline",
            get(query::get_timeline),
        )
        .route(
            "/v1/customers/{customer_id}/scores",
            get(scores_http::customer_scores),
        )
        .route("/v1/models/bgnbd", get(scores_http::bg_nbd_model))
        .route(
            "/v1/models/gamma-gamma",
            get(scores_http::gamma_gamma_model),
        )
        .route("/v1/segments", get(scores_http::segment_counts))
        .route(
            "/v1/segments/{kind}/{name}/customers",
            get(scores_http::segment_members),
        )
        .route("/v1/identity/conflicts", get(query::list_conflicts))
        .route("/v1/admin/status", get(query::admin_status))
        .route(
            "/v1/admin/replays",
            axum::routing::post(query::create_replay),
        )
        .route("/v1/admin/versions", get(query::list_versions))
        .route(
            "/v1/admin/versions/{version}/switch",
            axum::routing::post(query::switch_version),
        )
        .route(
            "/v1/admin/versions/{version}",
            axum::routing::delete(query::drop_version),
        )
        .route("/v1/admin/verify", get(query::verify))
        .route("/healthz", get(query::healthz))
        .route("/metrics", get(query::metrics))
        .fallback(rapport_common::http::no_such_route)
        .with_state(state);
    rapport_common::http::with_request_metrics(routes, &registry, "projector")
}
