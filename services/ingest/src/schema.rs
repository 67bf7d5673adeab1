//! The event contract of `POST /v1/events` as the API document describes
//! it. Ingest reads bodies with its own rules ([`crate::validate`]), which
//! name every broken field and refuse unknown ones; these types only
//! describe what those rules take. The example batch holds one event of
//! every type, and a test posts it to the handler, which must accept it
//! whole: the description cannot promise what the rules refuse.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

/// 1 to 1000 events, at most 1 MiB in all and 32 KiB each; accepted whole
/// or not at all.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"events": [
    {"event_id": "0193a5b0-7c1e-7d4e-9f00-000000000001", "type": "customer.registered", "occurred_at": "2026-11-01T09:00:00Z",
     "customer": {"customer_id": "c-42", "email": "ada@example.com"}, "data": {"name": "Ada Lovelace", "city": "London", "attributes": {"tier": "gold"}}},
    {"event_id": "0193a5b0-7c1e-7d4e-9f00-000000000002", "type": "customer.updated", "occurred_at": "2026-11-01T09:05:00Z",
     "customer": {"customer_id": "c-42"}, "data": {"phone": "+44 20 7946 0000"}},
    {"event_id": "0193a5b0-7c1e-7d4e-9f00-000000000003", "type": "identity.linked", "occurred_at": "2026-11-01T09:06:00Z",
     "customer": {"customer_id": "c-42", "anonymous_id": "anon-7"}, "data": {}},
    {"event_id": "0193a5b0-7c1e-7d4e-9f00-000000000004", "type": "web.page_viewed", "occurred_at": "2026-11-01T09:10:00Z",
     "channel": "web", "customer": {"anonymous_id": "anon-7"}, "data": {"url": "https://shop.example/tea", "referrer": "https://search.example/", "session_id": "s-1", "duration_ms": 5200}},
    {"event_id": "0193a5b0-7c1e-7d4e-9f00-000000000005", "type": "email.sent", "occurred_at": "2026-11-01T09:20:00Z",
     "customer": {"email": "ada@example.com"}, "data": {"message_id": "m-1", "campaign_id": "autumn"}},
    {"event_id": "0193a5b0-7c1e-7d4e-9f00-000000000006", "type": "email.opened", "occurred_at": "2026-11-01T09:21:00Z",
     "customer": {"email": "ada@example.com"}, "data": {"message_id": "m-1", "campaign_id": "autumn"}},
    {"event_id": "0193a5b0-7c1e-7d4e-9f00-000000000007", "type": "email.clicked", "occurred_at": "2026-11-01T09:22:00Z",
     "customer": {"email": "ada@example.com"}, "data": {"message_id": "m-1", "campaign_id": "autumn", "url": "https://shop.example/tea"}},
    {"event_id": "0193a5b0-7c1e-7d4e-9f00-000000000008", "type": "email.bounced", "occurred_at": "2026-11-01T09:23:00Z",
     "customer": {"email": "old@example.com"}, "data": {"message_id": "m-2"}},
    {"event_id": "0193a5b0-7c1e-7d4e-9f00-000000000009", "type": "call.completed", "occurred_at": "2026-11-01T09:30:00Z",
     "customer": {"phone": "+44 20 7946 0000"}, "data": {"direction": "inbound", "duration_s": 240, "outcome": "resolved", "agent_id": "a-3"}},
    {"event_id": "0193a5b0-7c1e-7d4e-9f00-000000000010", "type": "order.placed", "occurred_at": "2026-11-01T10:00:00Z",
     "customer": {"customer_id": "c-42"}, "data": {"order_id": "o-1", "total_minor": 12900, "currency": "CNY", "items": [{"sku": "tea-1", "quantity": 2, "unit_price_minor": 6450}]}},
    {"event_id": "0193a5b0-7c1e-7d4e-9f00-000000000011", "type": "order.refunded", "occurred_at": "2026-11-02T10:00:00Z",
     "customer": {"customer_id": "c-42"}, "data": {"order_id": "o-1", "amount_minor": 6450}},
    {"event_id": "0193a5b0-7c1e-7d4e-9f00-000000000012", "type": "order.cancelled", "occurred_at": "2026-11-02T11:00:00Z",
     "customer": {"customer_id": "c-42"}, "data": {"order_id": "o-2"}},
    {"event_id": "0193a5b0-7c1e-7d4e-9f00-000000000013", "type": "ticket.opened", "occurred_at": "2026-11-03T10:00:00Z",
     "channel": "chat", "customer": {"customer_id": "c-42"}, "data": {"ticket_id": "t-1", "category": "complaint", "subject": "the tin was dented"}},
    {"event_id": "0193a5b0-7c1e-7d4e-9f00-000000000014", "type": "ticket.resolved", "occurred_at": "2026-11-04T10:00:00Z",
     "customer": {"customer_id": "c-42"}, "data": {"ticket_id": "t-1"}},
    {"event_id": "0193a5b0-7c1e-7d4e-9f00-000000000015", "type": "survey.answered", "occurred_at": "2026-11-05T10:00:00Z",
     "customer": {"customer_id": "c-42"}, "data": {"survey_id": "nps-q4", "nps": 9, "csat": 5, "comment": "lovely tea"}},
    {"event_id": "0193a5b0-7c1e-7d4e-9f00-000000000016", "type": "consent.changed", "occurred_at": "2026-11-06T10:00:00Z",
     "customer": {"customer_id": "c-42"}, "data": {"channel": "sms", "granted": false}},
    {"event_id": "0193a5b0-7c1e-7d4e-9f00-000000000017", "type": "points.redeemed", "occurred_at": "2026-11-07T10:00:00Z",
     "source": "pos-3", "customer": {"customer_id": "c-42"}, "data": {"points": 500, "reason": "voucher"}},
    {"event_id": "0193a5b0-7c1e-7d4e-9f00-000000000018", "type": "custom.tracked", "occurred_at": "2026-11-08T10:00:00Z",
     "customer": {"anonymous_id": "anon-7"}, "data": {"name": "Wishlist Added", "properties": {"sku": "tea-oolong", "list": "gifts"}}}
]}))]
pub(crate) struct EventBatch {
    events: Vec<Event>,
}

/// One storefront interaction. Unknown fields are refused.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Event {
    /// A UUID, the idempotency key: an event sent again is never counted
    /// twice.
    #[schema(format = "uuid")]
    event_id: String,
    #[serde(rename = "type")]
    kind: EventType,
    /// RFC 3339 with a zone (`Z` or `±HH:MM`).
    #[schema(format = DateTime)]
    occurred_at: String,
    /// Without it, the type implies one: `email.*` email, `call.completed`
    /// phone, `web.*`, `order.placed`, `customer.registered` and
    /// `identity.linked` web, the rest other.
    #[schema(nullable = false)]
    channel: Option<Channel>,
    /// Tags the sender; ingest fills in its own address without it.
    #[schema(nullable = false)]
    source: Option<String>,
    customer: Customer,
    /// What the type carries: see each shape.
    data: Data,
}

/// The event types ingest accepts.
#[derive(Serialize, ToSchema)]
pub(crate) enum EventType {
    #[serde(rename = "customer.registered")]
    CustomerRegistered,
    #[serde(rename = "customer.updated")]
    CustomerUpdated,
    #[serde(rename = "identity.linked")]
    IdentityLinked,
    #[serde(rename = "web.page_viewed")]
    PageViewed,
    #[serde(rename = "email.sent")]
    EmailSent,
    #[serde(rename = "email.opened")]
    EmailOpened,
    #[serde(rename = "email.clicked")]
    EmailClicked,
    #[serde(rename = "email.bounced")]
    EmailBounced,
    #[serde(rename = "call.completed")]
    CallCompleted,
    #[serde(rename = "order.placed")]
    OrderPlaced,
    #[serde(rename = "order.cancelled")]
    OrderCancelled,
    #[serde(rename = "order.refunded")]
    OrderRefunded,
    #[serde(rename = "ticket.opened")]
    TicketOpened,
    #[serde(rename = "ticket.resolved")]
    TicketResolved,
    #[serde(rename = "survey.answered")]
    SurveyAnswered,
    #[serde(rename = "consent.changed")]
    ConsentChanged,
    #[serde(rename = "points.redeemed")]
    PointsRedeemed,
    #[serde(rename = "custom.tracked")]
    CustomTracked,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Channel {
    Web,
    App,
    Email,
    Phone,
    Sms,
    Store,
    Chat,
    Other,
}

/// Who the event is about: at least one identifier. Emails are compared
/// trimmed and lower-cased, phones by `+` and their digits.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Customer {
    /// The shop's own id; required by `customer.registered`.
    #[schema(nullable = false)]
    customer_id: Option<String>,
    #[schema(nullable = false)]
    email: Option<String>,
    #[schema(nullable = false)]
    phone: Option<String>,
    /// A browser's or device's id.
    #[schema(nullable = false)]
    anonymous_id: Option<String>,
}

/// The `data` of each type.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum Data {
    Profile(ProfileData),
    PageViewed(PageViewedData),
    Email(EmailData),
    Call(CallData),
    OrderPlaced(OrderPlacedData),
    OrderRefunded(OrderRefundedData),
    Order(OrderData),
    TicketOpened(TicketOpenedData),
    Ticket(TicketData),
    Survey(SurveyData),
    Consent(ConsentData),
    Points(PointsData),
    Custom(CustomData),
    Linked(LinkedData),
}

/// `customer.registered`, `customer.updated`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProfileData {
    #[schema(nullable = false)]
    name: Option<String>,
    #[schema(nullable = false)]
    email: Option<String>,
    #[schema(nullable = false)]
    phone: Option<String>,
    #[schema(nullable = false)]
    city: Option<String>,
    #[schema(nullable = false)]
    attributes: Option<BTreeMap<String, String>>,
}

/// `identity.linked`: the identifiers in `customer` (at least two) are
/// one person.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LinkedData {}

/// `web.page_viewed`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageViewedData {
    url: String,
    #[schema(nullable = false)]
    referrer: Option<String>,
    #[schema(nullable = false)]
    session_id: Option<String>,
    #[schema(nullable = false, minimum = 0)]
    duration_ms: Option<i64>,
}

/// `email.sent`, `email.opened`, `email.clicked`, `email.bounced`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmailData {
    message_id: String,
    #[schema(nullable = false)]
    campaign_id: Option<String>,
    #[schema(nullable = false)]
    url: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Direction {
    Inbound,
    Outbound,
}

/// `call.completed`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallData {
    direction: Direction,
    #[schema(minimum = 0)]
    duration_s: i64,
    #[schema(nullable = false)]
    outcome: Option<String>,
    #[schema(nullable = false)]
    agent_id: Option<String>,
}

/// `order.placed`. Amounts are in the currency's minor unit (ISO 4217:
/// cents for USD, yen for JPY).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrderPlacedData {
    order_id: String,
    #[schema(minimum = 0)]
    total_minor: i64,
    /// An ISO 4217 code.
    #[schema(pattern = "^[A-Z]{3}$")]
    currency: String,
    #[schema(nullable = false)]
    items: Option<Vec<OrderItem>>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrderItem {
    sku: String,
    #[schema(minimum = 1)]
    quantity: i64,
    unit_price_minor: i64,
}

/// `order.refunded`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrderRefundedData {
    order_id: String,
    #[schema(minimum = 1)]
    amount_minor: i64,
}

/// `order.cancelled`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrderData {
    order_id: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TicketCategory {
    Complaint,
    Inquiry,
    AfterSales,
}

/// `ticket.opened`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TicketOpenedData {
    ticket_id: String,
    category: TicketCategory,
    #[schema(nullable = false)]
    subject: Option<String>,
}

/// `ticket.resolved`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TicketData {
    ticket_id: String,
}

/// `survey.answered`: an NPS score, a CSAT score, or both.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SurveyData {
    survey_id: String,
    #[schema(nullable = false, minimum = 0, maximum = 10)]
    nps: Option<i64>,
    #[schema(nullable = false, minimum = 1, maximum = 5)]
    csat: Option<i64>,
    #[schema(nullable = false)]
    comment: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ConsentChannel {
    Email,
    Sms,
    Phone,
}

/// `consent.changed`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsentData {
    channel: ConsentChannel,
    granted: bool,
}

/// `points.redeemed`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PointsData {
    #[schema(minimum = 1)]
    points: i64,
    #[schema(nullable = false)]
    reason: Option<String>,
}

/// `custom.tracked`: anything else the storefront tracks, kept on the
/// timeline and counted.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CustomData {
    /// What happened, as the storefront names it (at most 128 bytes).
    name: String,
    /// Up to 100 entries of text; values are personal data, sealed.
    #[schema(nullable = false)]
    properties: Option<std::collections::BTreeMap<String, String>>,
}

/// `202`: every event is on the log.
#[derive(Serialize, ToSchema)]
pub(crate) struct Accepted {
    /// Events acknowledged by the broker.
    pub(crate) accepted: usize,
}

/// A Segment batch: what `analytics-node`, `analytics-python` and
/// analytics.js in batching mode send. At most 500 KiB in all (after
/// gzip), 32 KiB per message; taken whole or not at all.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"writeKey": "rk_write_3b9f0c1d2e4a5b6c", "sentAt": "2026-11-01T10:00:01.000Z",
    "context": {"library": {"name": "analytics-python", "version": "2.3.4"}},
    "batch": [
        {"type": "identify", "messageId": "m-1", "userId": "c-42", "anonymousId": "anon-7", "timestamp": "2026-11-01T10:00:00.000Z",
         "traits": {"email": "ada@example.com", "name": "Ada Lovelace", "plan": "gold"}},
        {"type": "track", "messageId": "m-2", "userId": "c-42", "timestamp": "2026-11-01T10:00:00.500Z", "event": "Order Completed",
         "properties": {"order_id": "o-1", "total": 129.0, "currency": "CNY", "products": [{"product_id": "tea-1", "price": 64.5, "quantity": 2}]}}
    ]}))]
pub(crate) struct SegmentBatch {
    batch: Vec<SegmentMessage>,
    /// The write key, when not sent as the Basic user name.
    #[serde(rename = "writeKey")]
    #[schema(nullable = false)]
    write_key: Option<String>,
    /// When the client sent the batch, for messages without their own.
    #[serde(rename = "sentAt")]
    #[schema(nullable = false, format = DateTime)]
    sent_at: Option<String>,
    /// Merged under each message's own `context`.
    #[schema(nullable = false, value_type = Option<Object>)]
    context: Option<serde_json::Value>,
}

/// One call of Segment's tracking spec. Fields other than these are
/// ignored; `properties` and `traits` are open.
#[derive(Serialize, ToSchema)]
pub(crate) struct SegmentMessage {
    /// identify, track, page, screen, alias or group; implied by the
    /// single-call routes.
    #[serde(rename = "type")]
    #[schema(nullable = false)]
    kind: Option<String>,
    /// The idempotency key; without it, one is derived from the message.
    #[serde(rename = "messageId")]
    #[schema(nullable = false)]
    message_id: Option<String>,
    /// The shop's customer id. `userId` or `anonymousId` is required.
    #[serde(rename = "userId")]
    #[schema(nullable = false)]
    user_id: Option<String>,
    #[serde(rename = "anonymousId")]
    #[schema(nullable = false)]
    anonymous_id: Option<String>,
    #[schema(nullable = false, format = DateTime)]
    timestamp: Option<String>,
    #[serde(rename = "originalTimestamp")]
    #[schema(nullable = false, format = DateTime)]
    original_timestamp: Option<String>,
    /// With `originalTimestamp` (or `timestamp`), corrects the sender's
    /// clock: the event happened at receivedAt − (sentAt − originalTimestamp).
    #[serde(rename = "sentAt")]
    #[schema(nullable = false, format = DateTime)]
    sent_at: Option<String>,
    #[schema(nullable = false, value_type = Option<Object>)]
    context: Option<serde_json::Value>,
    /// track: the action's name (`Order Completed`, …).
    #[schema(nullable = false)]
    event: Option<String>,
    /// page and screen: the page's name.
    #[schema(nullable = false)]
    name: Option<String>,
    #[schema(nullable = false, value_type = Option<Object>)]
    properties: Option<serde_json::Value>,
    #[schema(nullable = false, value_type = Option<Object>)]
    traits: Option<serde_json::Value>,
    /// alias: the id the person had before (an anonymous id).
    #[serde(rename = "previousId")]
    #[schema(nullable = false)]
    previous_id: Option<String>,
    #[serde(rename = "groupId")]
    #[schema(nullable = false)]
    group_id: Option<String>,
    #[serde(rename = "writeKey")]
    #[schema(nullable = false)]
    write_key: Option<String>,
}

/// `200`: every event the request stands for is on the log.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"success": true}))]
pub(crate) struct SegmentSuccess {
    success: bool,
}

/// A refusal as tracking clients read it.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"success": false, "code": "invalid_request", "message": "batch[3].userId: userId or anonymousId is required; nothing was accepted", "field": "batch[3].userId"}))]
pub(crate) struct SegmentError {
    success: bool,
    /// invalid_request, unauthorized, forbidden, request_timeout,
    /// rate_limited or unavailable.
    code: String,
    message: String,
    /// The field at fault, for a 400.
    #[schema(nullable = false)]
    field: Option<String>,
}
