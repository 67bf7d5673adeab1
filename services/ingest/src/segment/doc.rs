//! The tracking routes as the API document describes them. The handlers
//! are closures over the call each route implies; these stand-ins carry
//! their descriptions, and the document test holds them to the router.
#![allow(dead_code)]

use crate::schema::{SegmentBatch, SegmentError, SegmentMessage, SegmentSuccess};

macro_rules! tracking_route {
    ($name:ident, $path:literal, $body:ty, $what:literal) => {
        #[doc = $what]
        #[utoipa::path(post, path = $path, tag = "tracking", operation_id = stringify!($name),
            request_body(description = "JSON whatever the Content-Type (analytics.js posts text/plain); `Content-Encoding: gzip` is taken.", content(
                ($body = "application/json"),
                ($body = "text/plain"),
            )),
            responses(
                (status = 200, description = "Every event is on the log.", body = SegmentSuccess),
                (status = 400, description = "Malformed or oversized (32 KiB a message, 500 KiB a request): `field` names what is wrong; nothing was produced.", body = SegmentError),
                (status = 401, description = "No write key (Basic user name or `writeKey` in the body), or an unknown, revoked or expired one.", body = SegmentError),
                (status = 403, description = "Not a write key, or a page origin the key does not take events from.", body = SegmentError),
                (status = 429, description = "Over the key's rate; `Retry-After` says when to send again.", body = SegmentError),
                (status = 503, description = "The broker or the vault cannot take the events now; nothing was produced. `Retry-After` says when to send again.", body = SegmentError),
            ))]
        pub(crate) fn $name() {}
    };
}

tracking_route!(
    segment_batch,
    "/v1/batch",
    SegmentBatch,
    "A batch of calls, as server SDKs send them."
);
tracking_route!(
    segment_import,
    "/v1/import",
    SegmentBatch,
    "The same as `/v1/batch`: Segment's route for historical data."
);
tracking_route!(
    segment_b,
    "/v1/b",
    SegmentBatch,
    "The same as `/v1/batch`: analytics.js in batching mode."
);
tracking_route!(
    segment_track,
    "/v1/track",
    SegmentMessage,
    "One track call: an action with its properties."
);
tracking_route!(
    segment_t,
    "/v1/t",
    SegmentMessage,
    "`/v1/track`, as analytics.js names it."
);
tracking_route!(
    segment_identify,
    "/v1/identify",
    SegmentMessage,
    "One identify call: who the person is, with traits."
);
tracking_route!(
    segment_i,
    "/v1/i",
    SegmentMessage,
    "`/v1/identify`, as analytics.js names it."
);
tracking_route!(segment_page, "/v1/page", SegmentMessage, "One page view.");
tracking_route!(
    segment_p,
    "/v1/p",
    SegmentMessage,
    "`/v1/page`, as analytics.js names it."
);
tracking_route!(
    segment_screen,
    "/v1/screen",
    SegmentMessage,
    "One screen view in an app."
);
tracking_route!(
    segment_s,
    "/v1/s",
    SegmentMessage,
    "`/v1/screen`, as analytics.js names it."
);
tracking_route!(
    segment_alias,
    "/v1/alias",
    SegmentMessage,
    "Links `previousId` (an anonymous id) to `userId`."
);
tracking_route!(
    segment_a,
    "/v1/a",
    SegmentMessage,
    "`/v1/alias`, as analytics.js names it."
);
tracking_route!(
    segment_group,
    "/v1/group",
    SegmentMessage,
    "The person's group (kept as a custom event named Group)."
);
tracking_route!(
    segment_g,
    "/v1/g",
    SegmentMessage,
    "`/v1/group`, as analytics.js names it."
);

#[utoipa::path(get, path = "/v1/projects/{writeKey}/settings", tag = "tracking", operation_id = "segment_settings",
    params(("writeKey" = String, Path, description = "A write key.")),
    responses(
        (status = 200, description = "The settings analytics.js loads: events go to this host, and nowhere else.", body = Object),
        (status = 404, description = "Not a live write key.", body = rapport_common::admin::ErrorAnswer),
    ))]
pub(crate) fn segment_settings() {}

#[utoipa::path(get, path = "/analytics.js/v1/{writeKey}/{file}", tag = "tracking", operation_id = "segment_bundle",
    params(("writeKey" = String, Path, description = "A write key."),
        ("file" = String, Path, description = "`analytics.min.js` (or `analytics.js`).")),
    responses(
        (status = 200, description = "analytics.js (analytics-next's standalone bundle, vendored from npm) with the write key written in.", content_type = "text/javascript", body = String),
        (status = 404, description = "Not a live write key, or another file.", body = rapport_common::admin::ErrorAnswer),
    ))]
pub(crate) fn segment_bundle() {}

#[utoipa::path(get, path = "/analytics-next/bundles/{file}", tag = "tracking", operation_id = "segment_chunk",
    params(("file" = String, Path, description = "A chunk analytics.js loads on demand.")),
    responses(
        (status = 200, description = "The chunk.", content_type = "text/javascript", body = String),
        (status = 404, description = "No such chunk.", body = rapport_common::admin::ErrorAnswer),
    ))]
pub(crate) fn segment_chunk() {}

#[utoipa::path(get, path = "/v1/snippet.js", tag = "tracking", operation_id = "segment_snippet",
    params(("writeKey" = String, Query, description = "The write key the page sends with."),
        ("page" = Option<bool>, Query, description = "`false`: do not send the first page view.")),
    responses(
        (status = 200, description = "The loader to paste: it queues calls until analytics.js arrives from this host.", content_type = "text/javascript", body = String),
        (status = 400, description = "No `writeKey`, or `page` not a boolean.", body = rapport_common::admin::ErrorAnswer),
        (status = 404, description = "Not a live write key.", body = rapport_common::admin::ErrorAnswer),
    ))]
pub(crate) fn segment_snippet() {}
