//! The query API's OpenAPI description. The handlers are described here
//! rather than on themselves: several build their answers as JSON (scores
//! merged with the id they are shown under, segment counts keyed by the
//! segment names the configuration sets), so the types below describe
//! those answers, and a test holds real answers of every read route to the
//! schemas the document gives them (see `lib.rs`).
#![allow(dead_code)]

use std::collections::BTreeMap;

use rapport_common::admin::{
    ErrorAnswer, PartitionsRequest, PartitionsSet, ProjectionDropped, ProjectionVersions,
    ProjectorStatus, ReplayRequest, ReplayStarted, VerifyReport, VersionSwitched,
};
use rapport_common::http::Health;
use rapport_projections::analytics::scoring::CustomerScores;
use rapport_projections::analytics::validation::{PurchaseValidation, SpendValidation};
use rapport_projections::customer_view::CustomerDocument;
use serde::Serialize;
use utoipa::ToSchema;

use crate::campaigns_http::{CampaignList, CampaignListParams, CampaignParams, CampaignReport};
use crate::query::{
    ConflictList, ConflictParams, LookupParams, SwitchParams, TimelinePage, TimelineParams,
    VerifyParams, VersionParams,
};
use crate::scores_http::{MemberParams, ModelParams, ScoreParams, ValidationParams};

/// The person a path names.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct CustomerPath {
    /// The shop's customer id, its pseudonym or a prospect id.
    customer_id: String,
}

/// Every operation the query API serves.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    find_customer,
    get_customer,
    get_timeline,
    customer_scores,
    bg_nbd_model,
    bg_nbd_validation,
    gamma_gamma_model,
    segment_counts,
    cohorts,
    list_campaigns,
    get_campaign,
    segment_members,
    list_conflicts,
    admin_status,
    create_replay,
    set_partitions,
    list_versions,
    switch_version,
    drop_version,
    verify,
    internal_reads,
    healthz,
    metrics,
    ui_root,
    ui_login_form,
    ui_login,
    ui_logout,
    ui_asset,
    ui_overview,
    ui_churn,
    ui_churn_csv,
    ui_segments,
    ui_models,
    ui_models_validation,
    ui_cohorts,
    ui_campaigns,
    ui_campaign,
    ui_people,
    ui_people_csv,
    ui_search,
    ui_customer,
    ui_timeline,
    ui_ops,
))]
pub(crate) struct ProjectorApi;

/// `GET /v1/customers/{customer_id}/scores`: the scores, and the id the
/// person is shown under.
#[derive(Serialize, ToSchema)]
pub(crate) struct ScoresAnswer {
    customer_id: String,
    #[serde(flatten)]
    scores: CustomerScores,
}

/// Which buyers a fit is over: first purchase within the cohort, when one
/// was asked for.
#[derive(Serialize, ToSchema)]
pub(crate) struct FitWindow {
    /// `YYYY-MM-DD`.
    as_of: String,
    cohort_from: Option<String>,
    cohort_to: Option<String>,
}

/// The BG/NBD fit (Fader, Hardie and Lee 2005), time in weeks.
#[derive(Serialize, ToSchema)]
pub(crate) struct BgNbdModel {
    r: f64,
    alpha: f64,
    a: f64,
    b: f64,
    log_likelihood: f64,
    /// Customers in the fit.
    customers: u64,
    /// Buyers in the population by `as_of`.
    buyers: u64,
    /// `weeks`.
    time_unit: String,
    #[serde(flatten)]
    window: FitWindow,
}

/// The Gamma-Gamma spend fit (Fader, Hardie and Lee 2005).
#[derive(Serialize, ToSchema)]
pub(crate) struct GammaGammaModel {
    p: f64,
    q: f64,
    gamma: f64,
    log_likelihood: f64,
    /// Repeat buyers in the fit.
    customers: u64,
    buyers: u64,
    #[serde(flatten)]
    window: FitWindow,
}

/// `GET /v1/models/bgnbd/validation`: the models fitted on the calibration
/// period, their predictions for the holdout beside what happened.
#[derive(Serialize, ToSchema)]
pub(crate) struct ModelValidation {
    calibration_end: String,
    holdout_end: String,
    holdout_days: i64,
    /// BG/NBD: repeat purchases in the holdout, predicted and actual.
    purchases: PurchaseValidation,
    /// Gamma-Gamma: the value of a holdout purchase, predicted and actual.
    spend: SpendAnswer,
}

/// The spend validation, or why Gamma-Gamma could not be fitted or checked.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum SpendAnswer {
    Validated(SpendValidation),
    NotFitted { not_fitted: String },
}

/// A model as the segment counts report it: fitted over so many
/// customers, or why not.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum FitSummary {
    Fitted { customers: u64 },
    NotFitted { not_fitted: String },
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ModelSummaries {
    bg_nbd: FitSummary,
    gamma_gamma: FitSummary,
}

/// `GET /v1/segments`: people per segment of every segmentation, each
/// segment named as the configuration names it (zero counts included).
#[derive(Serialize, ToSchema)]
pub(crate) struct SegmentCounts {
    as_of: String,
    customers: u64,
    models: ModelSummaries,
    rfm: BTreeMap<String, u64>,
    lifecycle: BTreeMap<String, u64>,
    value_tier: BTreeMap<String, u64>,
    loyalty: BTreeMap<String, u64>,
}

/// `GET /v1/cohorts`.
#[derive(Serialize, ToSchema)]
pub(crate) struct CohortFigures {
    as_of: String,
    /// Customers with a purchase by `as_of`.
    buyers: u64,
    /// Of them, those with purchases on two days or more.
    repeat_buyers: u64,
    /// repeat_buyers / buyers; `null` without buyers.
    repeat_purchase_rate: Option<f64>,
    second_purchase: SecondPurchaseFigures,
    /// One row per month of first purchase, oldest first (the last 24 months
    /// after each are followed).
    cohorts: Vec<CohortFigure>,
}

/// Days from a buyer's first purchase to their second.
#[derive(Serialize, ToSchema)]
pub(crate) struct SecondPurchaseFigures {
    /// Buyers with a second purchase by `as_of`.
    buyers: u64,
    /// Nearest-rank percentiles, in days; `null` without any.
    p25_days: Option<i64>,
    median_days: Option<i64>,
    p75_days: Option<i64>,
    mean_days: Option<f64>,
    /// Buyers per span of days: 0–7, 8–30, 31–90, 91–180, 181–365,
    /// 366–730, 731 and more.
    buckets: Vec<SecondPurchaseSpan>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct SecondPurchaseSpan {
    from_days: i64,
    /// The span's last day; `null` for the last, open one.
    to_days: Option<i64>,
    buyers: u64,
}

/// The buyers whose first purchase fell in one month.
#[derive(Serialize, ToSchema)]
pub(crate) struct CohortFigure {
    /// `YYYY-MM`.
    month: String,
    size: u64,
    /// For each later month up to `as_of`: how many of them bought in it.
    retention: Vec<RetentionCell>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct RetentionCell {
    /// 1 for the month after the first purchase.
    months_after: u32,
    buyers: u64,
    /// buyers / size.
    share: f64,
}

/// What a mailing list needs of one member. Identifiers of an erased
/// person read `[erased]`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Contact {
    customer_id: String,
    email: Option<String>,
    phone: Option<String>,
    name: Option<String>,
    /// The latest email consent, if one was ever given or withdrawn.
    email_consent: Option<bool>,
}

/// One page of a segment's members.
#[derive(Serialize, ToSchema)]
pub(crate) struct SegmentMembers {
    as_of: String,
    kind: String,
    customers: Vec<Contact>,
    /// Pass as `cursor=` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    next_cursor: Option<String>,
}

// Stand-ins that carry the attributes; `routes` in `router.rs` serves the
// real handlers, and the document test holds one to the other.

#[utoipa::path(get, path = "/v1/customers", tag = "customers", operation_id = "find_customer",
    params(LookupParams),
    responses(
        (status = 200, description = "The person holding the identifier, whole: every profile merged into them.", body = CustomerDocument),
        (status = 400, description = "Not exactly one identifier, or an empty one.", body = ErrorAnswer),
        (status = 404, description = "No customer with it (the answer names the kind, never the value).", body = ErrorAnswer),
        (status = 503, description = "The vault does not answer, so sealed values cannot be opened.", body = ErrorAnswer),
    ))]
fn find_customer() {}

#[utoipa::path(get, path = "/v1/customers/{customer_id}", tag = "customers", operation_id = "get_customer",
    params(CustomerPath, VersionParams),
    responses(
        (status = 200, description = "The unified view of the person.", body = CustomerDocument),
        (status = 404, description = "No such customer.", body = ErrorAnswer),
        (status = 503, description = "The vault does not answer.", body = ErrorAnswer),
    ))]
fn get_customer() {}

#[utoipa::path(get, path = "/v1/customers/{customer_id}/timeline", tag = "customers", operation_id = "get_timeline",
    params(CustomerPath, TimelineParams),
    responses(
        (status = 200, description = "Events newest first, across every profile of the person.", body = TimelinePage),
        (status = 400, description = "A bad limit or cursor.", body = ErrorAnswer),
        (status = 404, description = "No such customer.", body = ErrorAnswer),
    ))]
fn get_timeline() {}

#[utoipa::path(get, path = "/v1/customers/{customer_id}/scores", tag = "analytics", operation_id = "customer_scores",
    params(CustomerPath, ScoreParams),
    responses(
        (status = 200, description = "RFM, churn, CLV, lifecycle, value tier and loyalty at `as_of`.", body = ScoresAnswer),
        (status = 400, description = "A bad `as_of`.", body = ErrorAnswer),
        (status = 404, description = "No such customer.", body = ErrorAnswer),
    ))]
fn customer_scores() {}

#[utoipa::path(get, path = "/v1/models/bgnbd", tag = "analytics", operation_id = "bg_nbd_model",
    params(ModelParams),
    responses(
        (status = 200, description = "The fit.", body = BgNbdModel),
        (status = 400, description = "A bad date or cohort.", body = ErrorAnswer),
        (status = 422, description = "Too few buyers to fit.", body = ErrorAnswer),
    ))]
fn bg_nbd_model() {}

#[utoipa::path(get, path = "/v1/models/bgnbd/validation", tag = "analytics", operation_id = "bg_nbd_validation",
    params(ValidationParams),
    responses(
        (status = 200, description = "BG/NBD and Gamma-Gamma fitted on what was known at `calibration_end`, each calibration buyer's predicted holdout purchases and purchase value beside what they did: per number of calibration repeat purchases (0 … 6, 7+), per holdout week, and as a mean absolute error. Kept until 1 % of the people changed; the first request for a pair of dates fits both models (seconds at a million customers).", body = ModelValidation),
        (status = 400, description = "A bad date, or a holdout that is empty or longer than 1 096 days.", body = ErrorAnswer),
        (status = 422, description = "Too few calibration buyers to fit BG/NBD.", body = ErrorAnswer),
    ))]
fn bg_nbd_validation() {}

#[utoipa::path(get, path = "/v1/models/gamma-gamma", tag = "analytics", operation_id = "gamma_gamma_model",
    params(ModelParams),
    responses(
        (status = 200, description = "The fit.", body = GammaGammaModel),
        (status = 400, description = "A bad date or cohort.", body = ErrorAnswer),
        (status = 422, description = "Too few repeat buyers to fit.", body = ErrorAnswer),
    ))]
fn gamma_gamma_model() {}

#[utoipa::path(get, path = "/v1/segments", tag = "analytics", operation_id = "segment_counts",
    params(ScoreParams),
    responses(
        (status = 200, description = "People per segment.", body = SegmentCounts),
        (status = 400, description = "A bad `as_of`.", body = ErrorAnswer),
    ))]
fn segment_counts() {}

#[utoipa::path(get, path = "/v1/cohorts", tag = "analytics", operation_id = "cohorts",
    params(ScoreParams),
    responses(
        (status = 200, description = "Retention by month of first purchase, the repeat purchase rate and the time to a second purchase. The first request at a new date gathers the figures (seconds at a million customers); later ones read them.", body = CohortFigures),
        (status = 400, description = "A bad `as_of`.", body = ErrorAnswer),
    ))]
fn cohorts() {}

#[utoipa::path(get, path = "/v1/campaigns", tag = "analytics", operation_id = "list_campaigns",
    params(CampaignListParams),
    responses(
        (status = 200, description = "Every campaign first sent between `from` and `to`, newest first: people sent, delivered, bounced, opened, clicked, unsubscribed and converted, attributed orders and revenue, and the rates over the delivered. The rules are in docs/analytics.md (Campaigns).", body = CampaignList),
        (status = 400, description = "A bad date, or `to` before `from`.", body = ErrorAnswer),
    ))]
fn list_campaigns() {}

#[utoipa::path(get, path = "/v1/campaigns/{campaign_id}", tag = "analytics", operation_id = "get_campaign",
    params(("campaign_id" = String, Path, description = "The `campaign_id` the email events carry."), CampaignParams),
    responses(
        (status = 200, description = "The campaign's figures, and the same per RFM segment and per lifecycle stage each recipient had at the end of the day before their send. A send day not scored yet is scored first (seconds at a million customers).", body = CampaignReport),
        (status = 400, description = "A bad parameter.", body = ErrorAnswer),
        (status = 404, description = "No email of this campaign was sent.", body = ErrorAnswer),
    ))]
fn get_campaign() {}

#[utoipa::path(get, path = "/v1/segments/{kind}/{name}/customers", tag = "analytics", operation_id = "segment_members",
    params(
        ("kind" = String, Path, description = "`rfm`, `lifecycle`, `value_tier` or `loyalty`."),
        ("name" = String, Path, description = "A segment of that kind, as `GET /v1/segments` names it."),
        MemberParams,
    ),
    responses(
        (status = 200, description = "A page of members; as CSV (`customer_id,email,phone,name,email_consent`, cells a spreadsheet would run as formulas prefixed with `'`) with `format=csv`.",
            content((SegmentMembers = "application/json"), (String = "text/csv"))),
        (status = 400, description = "A bad parameter.", body = ErrorAnswer),
        (status = 404, description = "No such segmentation or segment.", body = ErrorAnswer),
    ))]
fn segment_members() {}

#[utoipa::path(get, path = "/v1/identity/conflicts", tag = "customers", operation_id = "list_conflicts",
    params(ConflictParams),
    responses((status = 200, description = "Identifiers two known customers claimed, newest first.", body = ConflictList)))]
fn list_conflicts() {}

#[utoipa::path(get, path = "/v1/admin/status", tag = "admin", operation_id = "admin_status",
    responses((status = 200, description = "Every projection version and its progress, and which projector process serves which partition.", body = ProjectorStatus)))]
fn admin_status() {}

/// Bytes of a protobuf message of `proto/rapport/internal/v1/reads.proto`.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub(crate) struct ProtobufBody(Vec<u8>);

#[utoipa::path(post, path = "/v1/internal/reads", tag = "internal", operation_id = "internal_reads",
    request_body(content = ProtobufBody, content_type = "application/x-protobuf",
        description = "A `rapport.internal.v1.ReadRequest`: point reads and prefix scans of a projection version, on the partitions named."),
    responses(
        (status = 200, description = "A `rapport.internal.v1.ReadAnswer`: one value per read and one entry list per scan, in order; values as stored (sealed tokens stay sealed).",
            content_type = "application/x-protobuf", body = ProtobufBody),
        (status = 400, description = "A body that is no `ReadRequest`, or too many reads.", body = ErrorAnswer),
        (status = 404, description = "No such version here.", body = ErrorAnswer),
        (status = 409, description = "This projector does not own every partition named (it was moved).", body = ErrorAnswer),
    ))]
fn internal_reads() {}

#[utoipa::path(post, path = "/v1/admin/replays", tag = "admin", operation_id = "create_replay", request_body = ReplayRequest,
    responses(
        (status = 201, description = "The rebuild started beside the live version.", body = ReplayStarted),
        (status = 400, description = "A bad field.", body = ErrorAnswer),
        (status = 409, description = "The version name is taken.", body = ErrorAnswer),
        (status = 503, description = "The cluster cannot be asked about the source topic.", body = ErrorAnswer),
    ))]
fn create_replay() {}

#[utoipa::path(put, path = "/v1/admin/partitions", tag = "admin", operation_id = "set_partitions", request_body = PartitionsRequest,
    responses(
        (status = 200, description = "This projector owns these partitions from now on (and after a restart): it applies those taken on from their stored offsets (their beginning, the first time) and serves them once read to their end; it stops announcing those given up at once and stops applying them two seconds later.", body = PartitionsSet),
        (status = 400, description = "No partition, one twice, or one the customer topic does not have.", body = ErrorAnswer),
        (status = 409, description = "This projector runs alone, or no other projector serves a partition given up (without force).", body = ErrorAnswer),
    ))]
fn set_partitions() {}

#[utoipa::path(get, path = "/v1/admin/versions", tag = "admin", operation_id = "list_versions",
    responses((status = 200, description = "The live version and every other.", body = ProjectionVersions)))]
fn list_versions() {}

#[utoipa::path(post, path = "/v1/admin/versions/{version}/switch", tag = "admin", operation_id = "switch_version",
    params(("version" = String, Path, description = "The version to make live."), SwitchParams),
    responses(
        (status = 200, description = "Switched.", body = VersionSwitched),
        (status = 404, description = "No such version.", body = ErrorAnswer),
        (status = 409, description = "The version has not caught up, or reads another topic.", body = ErrorAnswer),
    ))]
fn switch_version() {}

#[utoipa::path(delete, path = "/v1/admin/versions/{version}", tag = "admin", operation_id = "drop_version",
    params(("version" = String, Path, description = "The version to drop.")),
    responses(
        (status = 200, description = "Dropped.", body = ProjectionDropped),
        (status = 404, description = "No such version.", body = ErrorAnswer),
        (status = 409, description = "The live version cannot be dropped.", body = ErrorAnswer),
    ))]
fn drop_version() {}

#[utoipa::path(get, path = "/v1/admin/verify", tag = "admin", operation_id = "verify",
    params(VerifyParams),
    responses(
        (status = 200, description = "Entry counts, checksums and the first differing keys.", body = VerifyReport),
        (status = 404, description = "No such version.", body = ErrorAnswer),
    ))]
fn verify() {}

#[utoipa::path(get, path = "/healthz", tag = "meta", operation_id = "healthz",
    responses((status = 200, description = "The service is up.", body = Health)))]
fn healthz() {}

#[utoipa::path(get, path = "/metrics", tag = "meta", operation_id = "metrics",
    responses((status = 200, description = "Counters and gauges, OpenMetrics text.", content_type = "application/openmetrics-text", body = String)))]
fn metrics() {}

// The dashboard: HTML pages for browsers. A page takes its key from
// `Authorization` or from the session cookie `rapport_key` that
// `POST /ui/login` sets; a refusal is a page with the same status (the
// login form for a 401).

/// A dashboard page: its description and parameters.
macro_rules! page {
    ($name:ident, $path:literal, $what:literal $(, $param:tt)*) => {
        #[utoipa::path(get, path = $path, tag = "dashboard", operation_id = stringify!($name),
            params($($param),*),
            responses(
                (status = 200, description = $what, content_type = "text/html", body = String),
                (status = 400, description = "A bad parameter, named on the page.", content_type = "text/html", body = String),
            ))]
        fn $name() {}
    };
}

/// A page of population figures, which answers 202 while they are gathered.
macro_rules! figures_page {
    ($name:ident, $path:literal, $what:literal $(, $param:tt)*) => {
        #[utoipa::path(get, path = $path, tag = "dashboard", operation_id = stringify!($name),
            params($($param),*),
            responses(
                (status = 200, description = $what, content_type = "text/html", body = String),
                (status = 202, description = "The figures at this date are being gathered in the background (a few seconds at a million customers): a page that says so and reloads itself; `Retry-After` in seconds.", content_type = "text/html", body = String),
                (status = 400, description = "A bad parameter, named on the page.", content_type = "text/html", body = String),
            ))]
        fn $name() {}
    };
}

figures_page!(ui_overview, "/ui/", "Customers, buyers, revenue windows, repurchase rate, the R × FM grid and the counts per lifecycle stage, value tier and loyalty tier.",
    ("as_of" = Option<String>, Query, description = "`YYYY-MM-DD`; default today (UTC)."));
figures_page!(ui_churn, "/ui/churn", "At-risk customers ranked by CLV × (1 − P(alive)), with the reason for each flag.",
    ("as_of" = Option<String>, Query, description = "`YYYY-MM-DD`; default today (UTC)."),
    ("page" = Option<usize>, Query, description = "1-based page of 50."));
figures_page!(ui_segments, "/ui/segments", "Every segment with its size, its change over 30 days and links to members and their CSV.",
    ("as_of" = Option<String>, Query, description = "`YYYY-MM-DD`; default today (UTC)."));
figures_page!(ui_models, "/ui/models", "The BG/NBD and Gamma-Gamma fits, the calibration plot, the CLV distribution, and the validation on a calibration period and holdout (loaded from `/ui/models/validation`).",
    ("as_of" = Option<String>, Query, description = "`YYYY-MM-DD`; default today (UTC)."),
    ("calibration_end" = Option<String>, Query, description = "The validation's calibration end, `YYYY-MM-DD`; default 26 weeks before `holdout_end`."),
    ("holdout_end" = Option<String>, Query, description = "The validation's holdout end, `YYYY-MM-DD`; default `as_of`."));
page!(ui_models_validation, "/ui/models/validation", "The validation's tables and charts (an HTML fragment for htmx): holdout purchases by calibration repeat purchases, week by week, and the value of a purchase.",
    ("calibration_end" = Option<String>, Query, description = "`YYYY-MM-DD`; default 26 weeks before `holdout_end`."),
    ("holdout_end" = Option<String>, Query, description = "`YYYY-MM-DD`; default today (UTC)."));
figures_page!(ui_cohorts, "/ui/cohorts", "Retention by month of first purchase, as a heat map.",
    ("as_of" = Option<String>, Query, description = "`YYYY-MM-DD`; default today (UTC)."));
page!(ui_campaigns, "/ui/campaigns", "Every campaign first sent between `from` and `to` with its results (as they stand now), newest first.",
    ("as_of" = Option<String>, Query, description = "Kept for the header's date picker; campaign figures are as they stand now."),
    ("from" = Option<String>, Query, description = "`YYYY-MM-DD`: campaigns first sent on or after this day."),
    ("to" = Option<String>, Query, description = "`YYYY-MM-DD`: campaigns first sent on or before this day."));
page!(ui_campaign, "/ui/campaigns/{campaign_id}", "One campaign's results, and the same per RFM segment and lifecycle stage of its recipients on the day before their send; 404 for a campaign never sent.",
    ("campaign_id" = String, Path, description = "The campaign id its email events carry."),
    ("as_of" = Option<String>, Query, description = "Kept for the header's date picker."));
page!(ui_people, "/ui/people", "The people behind a number: one filter of `segment=kind:name`, `rfm=R-FM`, `bought_within=DAYS`, `cohort=YYYY-MM`, `repeats=N` (`N+`), `clv=FROM` or `filter=everyone|buyers|active_buyers|repeat_buyers`, 50 a page.",
    ("segment" = Option<String>, Query, description = "`rfm:champions`, `lifecycle:active`, …"),
    ("rfm" = Option<String>, Query, description = "A cell of the grid, `R-FM` (1–5 each)."),
    ("bought_within" = Option<i64>, Query, description = "Days up to `as_of`."),
    ("cohort" = Option<String>, Query, description = "Month of first purchase, `YYYY-MM`."),
    ("after" = Option<u32>, Query, description = "With `cohort`: only those who bought this many months (0–23) after that month."),
    ("filter" = Option<String>, Query, description = "`everyone`, `buyers`, `active_buyers` (not at risk) or `repeat_buyers`."),
    ("repeats" = Option<String>, Query, description = "Buyers with `N` repeat purchases, or `N+` for N or more."),
    ("clv" = Option<i64>, Query, description = "Buyers in the CLV bin starting at this many major units (0, 10, 25, 50, 100, 250, 500, 1000, 2500)."),
    ("cursor" = Option<String>, Query, description = "From the previous page's Next link."),
    ("as_of" = Option<String>, Query, description = "`YYYY-MM-DD`; default today (UTC)."));
page!(ui_search, "/ui/customers", "Finds a person by customer id, email or phone and redirects (303) to their page; 404 when nobody has it.",
    ("q" = String, Query, description = "A customer id, email or phone."),
    ("as_of" = Option<String>, Query, description = "Kept for the customer page."));
page!(ui_customer, "/ui/customers/{customer_id}", "Customer 360: identifiers, profile, channels, orders, tickets, consent, loyalty, scores, merged profiles and the timeline.",
    CustomerPath,
    ("as_of" = Option<String>, Query, description = "The day scores are for."),
    ("before" = Option<String>, Query, description = "Timeline cursor from an Older link."),
    ("date" = Option<String>, Query, description = "Start the timeline at the end of this day, `YYYY-MM-DD`."));
page!(ui_timeline, "/ui/customers/{customer_id}/timeline", "One page of the timeline as table rows (an HTML fragment for htmx).",
    CustomerPath,
    ("before" = Option<String>, Query, description = "Timeline cursor."),
    ("date" = Option<String>, Query, description = "Start at the end of this day, `YYYY-MM-DD`."));
page!(
    ui_ops,
    "/ui/ops",
    "Versions of the customer view, lag and progress per partition, dead letters."
);

#[utoipa::path(get, path = "/ui/churn.csv", tag = "dashboard", operation_id = "ui_churn_csv",
    params(("as_of" = Option<String>, Query, description = "`YYYY-MM-DD`; default today (UTC).")),
    responses((status = 200, description = "Every at-risk customer: `customer_id,email,phone,name,email_consent,at_stake_minor,clv_minor,p_alive,reason`.", content_type = "text/csv", body = String)))]
fn ui_churn_csv() {}

#[utoipa::path(get, path = "/ui/people.csv", tag = "dashboard", operation_id = "ui_people_csv",
    params(("segment" = Option<String>, Query, description = "As for `/ui/people`; so are `rfm`, `bought_within`, `cohort`, `filter` and `as_of`.")),
    responses((status = 200, description = "The whole list: `customer_id,email,phone,name,email_consent`.", content_type = "text/csv", body = String)))]
fn ui_people_csv() {}

#[utoipa::path(get, path = "/ui", tag = "dashboard", operation_id = "ui_root",
    responses((status = 308, description = "To `/ui/`.")))]
fn ui_root() {}

#[utoipa::path(get, path = "/ui/login", tag = "dashboard", operation_id = "ui_login_form",
    params(("next" = Option<String>, Query, description = "A `/ui/` path to go to after logging in.")),
    responses((status = 200, description = "The login form.", content_type = "text/html", body = String)))]
fn ui_login_form() {}

#[utoipa::path(post, path = "/ui/login", tag = "dashboard", operation_id = "ui_login",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`key=<read or admin key>&next=/ui/…`"),
    responses(
        (status = 303, description = "Logged in: sets the session cookie `rapport_key` (HttpOnly, SameSite=Strict, Path=/ui, no expiry) and goes to `next`."),
        (status = 400, description = "No key field.", content_type = "text/html", body = String),
        (status = 401, description = "An unknown, revoked or expired key: the form again.", content_type = "text/html", body = String),
        (status = 403, description = "A key that cannot read (write or service keys).", content_type = "text/html", body = String),
        (status = 429, description = "Too many failed logins.", content_type = "text/html", body = String),
    ))]
fn ui_login() {}

#[utoipa::path(post, path = "/ui/logout", tag = "dashboard", operation_id = "ui_logout",
    responses((status = 303, description = "Clears the session cookie and goes to the login form.")))]
fn ui_logout() {}

#[utoipa::path(get, path = "/ui/assets/{file}", tag = "dashboard", operation_id = "ui_asset",
    params(("file" = String, Path, description = "`htmx.min.js`, `uPlot.iife.min.js`, `uPlot.min.css`, `rapport.js` or `rapport.css`.")),
    responses(
        (status = 200, description = "The file, embedded in the binary.", content_type = "text/javascript", body = String),
        (status = 404, description = "No such file.", content_type = "text/html", body = String),
    ))]
fn ui_asset() {}
