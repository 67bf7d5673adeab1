//! The projector's HTTP API: every route, the key scope it needs and the
//! handler behind it.

use std::sync::Arc;

use axum::Router;
use rapport_common::apikeys::{Gate, RouteTable, Scope, ScopedRoutes};

use crate::cluster::READS_PATH;

use crate::query::{self, QueryState};
use crate::{campaigns_http, internal_http, scores_http};

/// The query HTTP API.
pub fn router(state: Arc<QueryState>, gate: &Gate) -> Router {
    routes(state, gate).0
}

/// [`router`], with the table of its routes and their scopes.
pub fn routes(state: Arc<QueryState>, gate: &Gate) -> (Router, RouteTable) {
    use Scope::{Admin, Open, Read, Service};
    let registry = state.registry.clone();
    let api = ScopedRoutes::new(gate)
        .get(Read, "/v1/customers", query::find_customer)
        .get(Read, "/v1/customers/{customer_id}", query::get_customer)
        .get(
            Read,
            "/v1/customers/{customer_id}/timeline",
            query::get_timeline,
        )
        .get(
            Read,
            "/v1/customers/{customer_id}/scores",
            scores_http::customer_scores,
        )
        .get(Read, "/v1/models/bgnbd", scores_http::bg_nbd_model)
        .get(
            Read,
            "/v1/models/bgnbd/validation",
            scores_http::bg_nbd_validation,
        )
        .get(
            Read,
            "/v1/models/gamma-gamma",
            scores_http::gamma_gamma_model,
        )
        .get(Read, "/v1/segments", scores_http::segment_counts)
        .get(Read, "/v1/cohorts", scores_http::cohorts)
        .get(Read, "/v1/campaigns", campaigns_http::list)
        .get(Read, "/v1/campaigns/{campaign_id}", campaigns_http::one)
        .get(
            Read,
            "/v1/segments/{kind}/{name}/customers",
            scores_http::segment_members,
        )
        .get(Read, "/v1/identity/conflicts", query::list_conflicts)
        .get(Admin, "/v1/admin/status", query::admin_status)
        .post(Admin, "/v1/admin/replays", query::create_replay)
        .get(Admin, "/v1/admin/versions", query::list_versions)
        .post(
            Admin,
            "/v1/admin/versions/{version}/switch",
            query::switch_version,
        )
        .delete(Admin, "/v1/admin/versions/{version}", query::drop_version)
        .get(Admin, "/v1/admin/verify", query::verify)
        .put(
            Admin,
            "/v1/admin/partitions",
            crate::partitions_http::set_partitions,
        )
        .post(Service, READS_PATH, internal_http::reads)
        .get(Open, "/healthz", query::healthz)
        .get(Read, "/metrics", query::metrics);
    let (routes, table) = rapport_common::openapi::finish_described(
        crate::ui::routes(api, gate),
        <crate::openapi::ProjectorApi as utoipa::OpenApi>::openapi(),
        "projector",
        "The query API: customers, timelines, scores, models and segments from the customer view, and its versions (rebuilds).",
    );
    let routes = routes
        .fallback(rapport_common::http::no_such_route)
        .with_state(state);
    (
        rapport_common::http::with_request_metrics(routes, &registry, "projector"),
        table,
    )
}
