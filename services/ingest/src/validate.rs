//! Turning a request body into protobuf events, or into the list of every
//! rule it breaks.
//!
//! JSON is first mapped onto the protobuf shape (reporting wrong types,
//! unknown keys and missing keys), then every event, whichever content type
//! it came in, goes through the same semantic checks.

use std::collections::BTreeMap;

use rapport_common::http::FieldError;
use rapport_projections::identity::{IdentifierKind, normalise_phone};
use rapport_projections::time::parse_rfc3339;
use rapport_proto::v1::{self as proto, event::Payload};
use serde_json::{Map, Value};

pub const MAX_EVENTS: usize = 1000;
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
pub const MAX_EVENT_BYTES: usize = 32 * 1024;
pub const MAX_ID_LEN: usize = 128;
pub const MAX_TEXT_LEN: usize = 2048;
/// Properties of one `custom.tracked` event.
pub const MAX_PROPERTIES: usize = 100;

/// Channels an event may name; without one, the type implies it.
pub const CHANNELS: [&str; 8] = [
    "web", "app", "email", "phone", "sms", "store", "chat", "other",
];

/// Every event type, with the channel it implies when none is sent.
pub const EVENT_TYPES: [(&str, &str); 18] = [
    ("customer.registered", "web"),
    ("customer.updated", "other"),
    ("identity.linked", "web"),
    ("web.page_viewed", "web"),
    ("email.sent", "email"),
    ("email.opened", "email"),
    ("email.clicked", "email"),
    ("email.bounced", "email"),
    ("call.completed", "phone"),
    ("order.placed", "web"),
    ("order.cancelled", "other"),
    ("order.refunded", "other"),
    ("ticket.opened", "other"),
    ("ticket.resolved", "other"),
    ("survey.answered", "other"),
    ("consent.changed", "other"),
    ("points.redeemed", "other"),
    ("custom.tracked", "other"),
];

/// The dotted type name of a payload.
pub fn type_of(payload: &Payload) -> &'static str {
    match payload {
        Payload::CustomerRegistered(_) => "customer.registered",
        Payload::CustomerUpdated(_) => "customer.updated",
        Payload::IdentityLinked(_) => "identity.linked",
        Payload::WebPageViewed(_) => "web.page_viewed",
        Payload::EmailSent(_) => "email.sent",
        Payload::EmailOpened(_) => "email.opened",
        Payload::EmailClicked(_) => "email.clicked",
        Payload::EmailBounced(_) => "email.bounced",
        Payload::CallCompleted(_) => "call.completed",
        Payload::OrderPlaced(_) => "order.placed",
        Payload::OrderCancelled(_) => "order.cancelled",
        Payload::OrderRefunded(_) => "order.refunded",
        Payload::TicketOpened(_) => "ticket.opened",
        Payload::TicketResolved(_) => "ticket.resolved",
        Payload::SurveyAnswered(_) => "survey.answered",
        Payload::ConsentChanged(_) => "consent.changed",
        Payload::PointsRedeemed(_) => "points.redeemed",
        Payload::CustomTracked(_) => "custom.tracked",
    }
}

fn default_channel(event_type: &str) -> Option<&'static str> {
    EVENT_TYPES
        .iter()
        .find(|(name, _)| *name == event_type)
        .map(|(_, channel)| *channel)
}

/// Collects errors for one event.
struct Errors<'a> {
    index: usize,
    list: &'a mut Vec<FieldError>,
}

impl Errors<'_> {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        let field = field.into();
        // One message per field: the first rule broken is the useful one.
        if !self
            .list
            .iter()
            .any(|error| error.index == Some(self.index) && error.field == field)
        {
            self.list.push(FieldError {
                index: Some(self.index),
                field,
                message: message.into(),
            });
        }
    }
}

/// Reads typed fields out of a JSON object, noting every problem.
struct JsonObject<'a, 'e> {
    object: &'a Map<String, Value>,
    prefix: &'static str,
    known: &'static [&'static str],
    errors: &'a mut Errors<'e>,
}

impl<'a, 'e> JsonObject<'a, 'e> {
    fn new(
        value: &'a Value,
        prefix: &'static str,
        known: &'static [&'static str],
        errors: &'a mut Errors<'e>,
    ) -> Option<Self> {
        let Some(object) = value.as_object() else {
            // The envelope has no prefix: the field at fault is the event.
            let field = match prefix.trim_end_matches('.') {
                "" => "event",
                nested => nested,
            };
            errors.add(field, "must be an object");
            return None;
        };
        for key in object.keys() {
            if !known.contains(&key.as_str()) {
                errors.add(
                    format!("{prefix}{key}"),
                    format!(
                        "is not a known field; expected one of: {}",
                        known.join(", ")
                    ),
                );
            }
        }
        Some(Self {
            object,
            prefix,
            known,
            errors,
        })
    }

    fn field(&self, key: &str) -> String {
        debug_assert!(self.known.contains(&key));
        format!("{}{key}", self.prefix)
    }

    fn string(&mut self, key: &str, required: bool) -> String {
        match self.object.get(key) {
            None | Some(Value::Null) => {
                if required {
                    self.errors.add(self.field(key), "is required");
                }
                String::new()
            }
            Some(Value::String(text)) => text.clone(),
            Some(_) => {
                self.errors.add(self.field(key), "must be a string");
                String::new()
            }
        }
    }

    fn integer(&mut self, key: &str, required: bool) -> Option<i64> {
        match self.object.get(key) {
            None | Some(Value::Null) => {
                if required {
                    self.errors.add(self.field(key), "is required");
                }
                None
            }
            Some(Value::Number(number)) if number.as_i64().is_some() => number.as_i64(),
            Some(_) => {
                self.errors.add(self.field(key), "must be a whole number");
                None
            }
        }
    }

    fn boolean(&mut self, key: &str, required: bool) -> bool {
        match self.object.get(key) {
            None | Some(Value::Null) => {
                if required {
                    self.errors.add(self.field(key), "is required");
                }
                false
            }
            Some(Value::Bool(flag)) => *flag,
            Some(_) => {
                self.errors.add(self.field(key), "must be true or false");
                false
            }
        }
    }

    fn string_map(&mut self, key: &str) -> BTreeMap<String, String> {
        match self.object.get(key) {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(entries)) => {
                let mut map = BTreeMap::new();
                for (name, value) in entries {
                    match value {
                        Value::String(text) => {
                            map.insert(name.clone(), text.clone());
                        }
                        _ => self
                            .errors
                            .add(format!("{}.{name}", self.field(key)), "must be a string"),
                    }
                }
                map
            }
            Some(_) => {
                self.errors
                    .add(self.field(key), "must be an object of strings");
                BTreeMap::new()
            }
        }
    }
}

/// Maps one JSON event onto the protobuf envelope. Semantic rules are checked
/// afterwards by [`check_event`].
pub fn event_from_json(index: usize, value: &Value, list: &mut Vec<FieldError>) -> proto::Event {
    let mut errors = Errors { index, list };
    let mut event = proto::Event::default();
    const ENVELOPE: &[&str] = &[
        "event_id",
        "type",
        "occurred_at",
        "channel",
        "source",
        "customer",
        "data",
    ];
    let Some(mut envelope) = JsonObject::new(value, "", ENVELOPE, &mut errors) else {
        return event;
    };
    event.event_id = envelope.string("event_id", true);
    event.r#type = envelope.string("type", true);
    let occurred_at = envelope.string("occurred_at", true);
    event.channel = envelope.string("channel", false);
    event.source = envelope.string("source", false);
    let customer_value = envelope.object.get("customer").cloned();
    let data_value = envelope.object.get("data").cloned();

    if !occurred_at.is_empty() {
        match parse_rfc3339(&occurred_at) {
            Ok(millis) => event.occurred_at_ms = millis,
            Err(error) => errors.add("occurred_at", error.to_string()),
        }
    }
    match &customer_value {
        None | Some(Value::Null) => errors.add(
            "customer",
            "is required and must name at least one of customer_id, email, phone, anonymous_id",
        ),
        Some(value) => {
            const CUSTOMER: &[&str] = &["customer_id", "email", "phone", "anonymous_id"];
            if let Some(mut customer) = JsonObject::new(value, "customer.", CUSTOMER, &mut errors) {
                event.customer = Some(proto::CustomerIdentifiers {
                    customer_id: customer.string("customer_id", false),
                    email: customer.string("email", false),
                    phone: customer.string("phone", false),
                    anonymous_id: customer.string("anonymous_id", false),
                    ..Default::default()
                });
            }
        }
    }
    let empty = Value::Object(Map::new());
    let data = match &data_value {
        None | Some(Value::Null) => &empty,
        Some(value) => value,
    };
    event.payload = payload_from_json(&event.r#type, data, &mut errors);
    event
}

fn payload_from_json(event_type: &str, data: &Value, errors: &mut Errors<'_>) -> Option<Payload> {
    macro_rules! object {
        ($known:expr) => {
            match JsonObject::new(data, "data.", $known, errors) {
                Some(object) => object,
                None => return None,
            }
        };
    }
    let payload = match event_type {
        "customer.registered" | "customer.updated" => {
            let mut data = object!(&["name", "email", "phone", "city", "attributes"]);
            let profile = proto::CustomerProfile {
                name: data.string("name", false),
                email: data.string("email", false),
                phone: data.string("phone", false),
                city: data.string("city", false),
                attributes: data.string_map("attributes"),
            };
            if event_type == "customer.registered" {
                Payload::CustomerRegistered(profile)
            } else {
                Payload::CustomerUpdated(profile)
            }
        }
        "identity.linked" => {
            object!(&[]);
            Payload::IdentityLinked(proto::IdentityLinked {})
        }
        "web.page_viewed" => {
            let mut data = object!(&["url", "referrer", "session_id", "duration_ms"]);
            Payload::WebPageViewed(proto::PageViewed {
                url: data.string("url", true),
                referrer: data.string("referrer", false),
                session_id: data.string("session_id", false),
                duration_ms: data.integer("duration_ms", false).unwrap_or(0),
            })
        }
        "email.sent" | "email.opened" | "email.clicked" | "email.bounced" => {
            let mut data = object!(&["message_id", "campaign_id", "url"]);
            let message = proto::EmailMessage {
                message_id: data.string("message_id", true),
                campaign_id: data.string("campaign_id", false),
                url: data.string("url", false),
            };
            match event_type {
                "email.sent" => Payload::EmailSent(message),
                "email.opened" => Payload::EmailOpened(message),
                "email.clicked" => Payload::EmailClicked(message),
                _ => Payload::EmailBounced(message),
            }
        }
        "call.completed" => {
            let mut data = object!(&["direction", "duration_s", "outcome", "agent_id"]);
            Payload::CallCompleted(proto::CallCompleted {
                direction: data.string("direction", true),
                duration_s: data.integer("duration_s", true).unwrap_or(0),
                outcome: data.string("outcome", false),
                agent_id: data.string("agent_id", false),
            })
        }
        "order.placed" => {
            let mut data = object!(&["order_id", "total_minor", "currency", "items"]);
            let order_id = data.string("order_id", true);
            let total_minor = data.integer("total_minor", true).unwrap_or(0);
            let currency = data.string("currency", true);
            let mut items = Vec::new();
            match data.object.get("items") {
                None | Some(Value::Null) => {}
                Some(Value::Array(entries)) => {
                    for (position, entry) in entries.iter().enumerate() {
                        let Some(item) = entry.as_object() else {
                            data.errors
                                .add(format!("data.items[{position}]"), "must be an object");
                            continue;
                        };
                        let mut item_errors = |field: &str, message: &str| {
                            data.errors
                                .add(format!("data.items[{position}].{field}"), message)
                        };
                        for key in item.keys() {
                            if !["sku", "quantity", "unit_price_minor"].contains(&key.as_str()) {
                                item_errors(
                                    key,
                                    "is not a known field; expected one of: sku, quantity, unit_price_minor",
                                );
                            }
                        }
                        let sku = match item.get("sku") {
                            Some(Value::String(sku)) => sku.clone(),
                            _ => {
                                item_errors("sku", "is required and must be a string");
                                String::new()
                            }
                        };
                        let quantity = item.get("quantity").and_then(Value::as_i64);
                        if quantity.is_none() {
                            item_errors("quantity", "is required and must be a whole number");
                        }
                        let unit_price_minor = item.get("unit_price_minor").and_then(Value::as_i64);
                        if unit_price_minor.is_none() {
                            item_errors(
                                "unit_price_minor",
                                "is required and must be a whole number",
                            );
                        }
                        items.push(proto::OrderItem {
                            sku,
                            quantity: quantity.unwrap_or(1),
                            unit_price_minor: unit_price_minor.unwrap_or(0),
                        });
                    }
                }
                Some(_) => data.errors.add("data.items", "must be an array"),
            }
            Payload::OrderPlaced(proto::OrderPlaced {
                order_id,
                total_minor,
                currency,
                items,
            })
        }
        "order.cancelled" => {
            let mut data = object!(&["order_id"]);
            Payload::OrderCancelled(proto::OrderCancelled {
                order_id: data.string("order_id", true),
            })
        }
        "order.refunded" => {
            let mut data = object!(&["order_id", "amount_minor"]);
            Payload::OrderRefunded(proto::OrderRefunded {
                order_id: data.string("order_id", true),
                amount_minor: data.integer("amount_minor", true).unwrap_or(0),
            })
        }
        "ticket.opened" => {
            let mut data = object!(&["ticket_id", "category", "subject"]);
            Payload::TicketOpened(proto::TicketOpened {
                ticket_id: data.string("ticket_id", true),
                category: data.string("category", true),
                subject: data.string("subject", false),
            })
        }
        "ticket.resolved" => {
            let mut data = object!(&["ticket_id"]);
            Payload::TicketResolved(proto::TicketResolved {
                ticket_id: data.string("ticket_id", true),
            })
        }
        "survey.answered" => {
            let mut data = object!(&["survey_id", "nps", "csat", "comment"]);
            let survey_id = data.string("survey_id", true);
            let nps = data.integer("nps", false);
            let csat = data.integer("csat", false);
            let clamp = |value: Option<i64>| {
                value.map(|value| value.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32)
            };
            Payload::SurveyAnswered(proto::SurveyAnswered {
                survey_id,
                nps: clamp(nps),
                csat: clamp(csat),
                comment: data.string("comment", false),
            })
        }
        "consent.changed" => {
            let mut data = object!(&["channel", "granted"]);
            Payload::ConsentChanged(proto::ConsentChanged {
                channel: data.string("channel", true),
                granted: data.boolean("granted", true),
            })
        }
        "points.redeemed" => {
            let mut data = object!(&["points", "reason"]);
            Payload::PointsRedeemed(proto::PointsRedeemed {
                points: data.integer("points", true).unwrap_or(0),
                reason: data.string("reason", false),
            })
        }
        "custom.tracked" => {
            let mut data = object!(&["name", "properties"]);
            Payload::CustomTracked(proto::CustomTracked {
                name: data.string("name", true),
                properties: data.string_map("properties"),
            })
        }
        // An unknown or missing type is reported by `check_event`.
        _ => return None,
    };
    Some(payload)
}

fn check_text(errors: &mut Errors<'_>, field: &str, value: &str, required: bool, max: usize) {
    if value.trim().is_empty() {
        if required {
            errors.add(field, "is required and must not be empty");
        }
        return;
    }
    if value.len() > max {
        errors.add(field, format!("must be at most {max} bytes"));
    } else if value.chars().any(char::is_control) {
        errors.add(field, "must not contain control characters");
    }
}

fn check_one_of(errors: &mut Errors<'_>, field: &str, value: &str, allowed: &[&str]) {
    if !allowed.contains(&value) {
        errors.add(field, format!("must be one of: {}", allowed.join(", ")));
    }
}

/// Whether `email` passes the email rule of `customer.email`.
pub fn is_email(email: &str) -> bool {
    let trimmed = email.trim();
    let valid = match trimmed.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !trimmed.contains(char::is_whitespace)
        }
        None => false,
    };
    valid && trimmed.len() <= 254
}

/// Whether `phone` passes the phone rule of `customer.phone`.
pub fn is_phone(phone: &str) -> bool {
    let digits = normalise_phone(phone).trim_start_matches('+').len();
    let allowed = phone
        .chars()
        .all(|character| character.is_ascii_digit() || " +-().".contains(character));
    allowed && (5..=15).contains(&digits)
}

fn check_email(errors: &mut Errors<'_>, field: &str, email: &str) {
    if !is_email(email) {
        errors.add(field, "must be an email address such as name@example.com");
    }
}

fn check_phone(errors: &mut Errors<'_>, field: &str, phone: &str) {
    if !is_phone(phone) {
        errors.add(field, "must be a phone number of 5 to 15 digits, optionally starting with + (spaces, dashes, dots and brackets are ignored)");
    }
}

/// Checks the rules every event must satisfy, whatever its content type, and
/// fills in the channel the type implies when none was sent.
pub fn check_event(index: usize, event: &mut proto::Event, list: &mut Vec<FieldError>) {
    let mut errors = Errors { index, list };
    if event.event_id.trim().is_empty() {
        errors.add(
            "event_id",
            "is required: a UUID that identifies this event (it is the idempotency key)",
        );
    } else if uuid::Uuid::try_parse(&event.event_id).is_err() {
        errors.add(
            "event_id",
            "must be a UUID such as 0193a5b0-7c1e-7d4e-9f00-2b1c3d4e5f60",
        );
    }
    match default_channel(&event.r#type) {
        None if event.r#type.is_empty() => errors.add("type", "is required"),
        None => {
            let names: Vec<&str> = EVENT_TYPES.iter().map(|(name, _)| *name).collect();
            errors.add(
                "type",
                format!(
                    "is not a known event type; expected one of: {}",
                    names.join(", ")
                ),
            );
        }
        Some(implied) => {
            if event.channel.is_empty() {
                event.channel = implied.to_owned();
            }
            match &event.payload {
                None => errors.add("data", format!("is missing the {} payload", event.r#type)),
                Some(payload) if type_of(payload) != event.r#type => {
                    errors.add(
                        "type",
                        format!(
                            "says {} but the payload is {}",
                            event.r#type,
                            type_of(payload)
                        ),
                    );
                }
                Some(_) => {}
            }
        }
    }
    // From 1970-01-01 (order histories go back decades) to 2100-01-01:
    // anything else is a unit mistake. The epoch's first millisecond is
    // protobuf's "not set".
    if event.occurred_at_ms != 0 && !(1..4_102_444_800_000).contains(&event.occurred_at_ms) {
        errors.add("occurred_at", "must lie between 1970-01-01 and 2100-01-01");
    } else if event.occurred_at_ms == 0 {
        errors.add(
            "occurred_at",
            "is required: an RFC 3339 timestamp such as 2026-11-01T10:00:00Z",
        );
    }
    check_one_of(&mut errors, "channel", &event.channel, &CHANNELS);
    check_text(&mut errors, "source", &event.source, false, MAX_ID_LEN);

    let customer = event.customer.clone().unwrap_or_default();
    let sent = [
        &customer.customer_id,
        &customer.email,
        &customer.phone,
        &customer.anonymous_id,
    ]
    .iter()
    .filter(|value| !value.trim().is_empty())
    .count();
    if sent == 0 {
        errors.add(
            "customer",
            "must name at least one of customer_id, email, phone, anonymous_id",
        );
    }
    check_text(
        &mut errors,
        "customer.customer_id",
        &customer.customer_id,
        false,
        MAX_ID_LEN,
    );
    check_text(
        &mut errors,
        "customer.anonymous_id",
        &customer.anonymous_id,
        false,
        MAX_ID_LEN,
    );
    if !customer.email.trim().is_empty() {
        check_email(&mut errors, "customer.email", &customer.email);
    }
    if !customer.phone.trim().is_empty() {
        check_phone(&mut errors, "customer.phone", &customer.phone);
    }

    use Payload::*;
    match &event.payload {
        Some(CustomerRegistered(profile) | CustomerUpdated(profile)) => {
            if matches!(event.payload, Some(CustomerRegistered(_)))
                && customer.customer_id.trim().is_empty()
            {
                errors.add(
                    "customer.customer_id",
                    "is required for customer.registered: registration creates a known customer",
                );
            }
            check_text(&mut errors, "data.name", &profile.name, false, MAX_TEXT_LEN);
            check_text(&mut errors, "data.city", &profile.city, false, MAX_TEXT_LEN);
            if !profile.email.trim().is_empty() {
                check_email(&mut errors, "data.email", &profile.email);
            }
            if !profile.phone.trim().is_empty() {
                check_phone(&mut errors, "data.phone", &profile.phone);
            }
            for (key, value) in &profile.attributes {
                check_text(
                    &mut errors,
                    &format!("data.attributes.{key}"),
                    key,
                    true,
                    MAX_ID_LEN,
                );
                check_text(
                    &mut errors,
                    &format!("data.attributes.{key}"),
                    value,
                    false,
                    MAX_TEXT_LEN,
                );
            }
        }
        Some(IdentityLinked(_)) if sent < 2 => {
            errors.add(
                "customer",
                "identity.linked needs at least two identifiers to link",
            );
        }
        Some(WebPageViewed(view)) => {
            check_text(&mut errors, "data.url", &view.url, true, MAX_TEXT_LEN);
            check_text(
                &mut errors,
                "data.referrer",
                &view.referrer,
                false,
                MAX_TEXT_LEN,
            );
            check_text(
                &mut errors,
                "data.session_id",
                &view.session_id,
                false,
                MAX_ID_LEN,
            );
            if view.duration_ms < 0 {
                errors.add("data.duration_ms", "must not be negative");
            }
        }
        Some(EmailSent(mail) | EmailOpened(mail) | EmailClicked(mail) | EmailBounced(mail)) => {
            check_text(
                &mut errors,
                "data.message_id",
                &mail.message_id,
                true,
                MAX_ID_LEN,
            );
            check_text(
                &mut errors,
                "data.campaign_id",
                &mail.campaign_id,
                false,
                MAX_ID_LEN,
            );
            check_text(&mut errors, "data.url", &mail.url, false, MAX_TEXT_LEN);
        }
        Some(CallCompleted(call)) => {
            check_one_of(
                &mut errors,
                "data.direction",
                &call.direction,
                &["inbound", "outbound"],
            );
            if call.duration_s < 0 {
                errors.add("data.duration_s", "must not be negative");
            }
            check_text(
                &mut errors,
                "data.outcome",
                &call.outcome,
                false,
                MAX_ID_LEN,
            );
            check_text(
                &mut errors,
                "data.agent_id",
                &call.agent_id,
                false,
                MAX_ID_LEN,
            );
        }
        Some(OrderPlaced(order)) => {
            check_text(
                &mut errors,
                "data.order_id",
                &order.order_id,
                true,
                MAX_ID_LEN,
            );
            if order.total_minor < 0 {
                errors.add("data.total_minor", "must not be negative");
            }
            if order.currency.len() != 3
                || !order.currency.bytes().all(|byte| byte.is_ascii_uppercase())
            {
                errors.add(
                    "data.currency",
                    "must be an ISO 4217 code of three capital letters, such as CNY or USD",
                );
            }
            for (position, item) in order.items.iter().enumerate() {
                check_text(
                    &mut errors,
                    &format!("data.items[{position}].sku"),
                    &item.sku,
                    true,
                    MAX_ID_LEN,
                );
                if item.quantity < 1 {
                    errors.add(
                        format!("data.items[{position}].quantity"),
                        "must be at least 1",
                    );
                }
                if item.unit_price_minor < 0 {
                    errors.add(
                        format!("data.items[{position}].unit_price_minor"),
                        "must not be negative",
                    );
                }
            }
        }
        Some(OrderCancelled(order)) => check_text(
            &mut errors,
            "data.order_id",
            &order.order_id,
            true,
            MAX_ID_LEN,
        ),
        Some(OrderRefunded(refund)) => {
            check_text(
                &mut errors,
                "data.order_id",
                &refund.order_id,
                true,
                MAX_ID_LEN,
            );
            if refund.amount_minor <= 0 {
                errors.add("data.amount_minor", "must be greater than 0");
            }
        }
        Some(TicketOpened(ticket)) => {
            check_text(
                &mut errors,
                "data.ticket_id",
                &ticket.ticket_id,
                true,
                MAX_ID_LEN,
            );
            check_one_of(
                &mut errors,
                "data.category",
                &ticket.category,
                &["complaint", "inquiry", "after_sales"],
            );
            check_text(
                &mut errors,
                "data.subject",
                &ticket.subject,
                false,
                MAX_TEXT_LEN,
            );
        }
        Some(TicketResolved(ticket)) => check_text(
            &mut errors,
            "data.ticket_id",
            &ticket.ticket_id,
            true,
            MAX_ID_LEN,
        ),
        Some(SurveyAnswered(survey)) => {
            check_text(
                &mut errors,
                "data.survey_id",
                &survey.survey_id,
                true,
                MAX_ID_LEN,
            );
            if survey.nps.is_none() && survey.csat.is_none() {
                errors.add("data", "survey.answered needs nps, csat or both");
            }
            if survey.nps.is_some_and(|nps| !(0..=10).contains(&nps)) {
                errors.add("data.nps", "must be between 0 and 10");
            }
            if survey.csat.is_some_and(|csat| !(1..=5).contains(&csat)) {
                errors.add("data.csat", "must be between 1 and 5");
            }
            check_text(
                &mut errors,
                "data.comment",
                &survey.comment,
                false,
                MAX_TEXT_LEN,
            );
        }
        Some(ConsentChanged(consent)) => check_one_of(
            &mut errors,
            "data.channel",
            &consent.channel,
            &["email", "sms", "phone"],
        ),
        Some(PointsRedeemed(redeemed)) => {
            if redeemed.points <= 0 {
                errors.add("data.points", "must be greater than 0");
            }
            check_text(
                &mut errors,
                "data.reason",
                &redeemed.reason,
                false,
                MAX_TEXT_LEN,
            );
        }
        Some(CustomTracked(tracked)) => {
            check_text(&mut errors, "data.name", &tracked.name, true, MAX_ID_LEN);
            if tracked.properties.len() > MAX_PROPERTIES {
                errors.add(
                    "data.properties",
                    format!("may have at most {MAX_PROPERTIES} entries"),
                );
            }
            for (key, value) in &tracked.properties {
                let field = format!("data.properties.{key}");
                check_text(&mut errors, &field, key, true, MAX_ID_LEN);
                check_text(&mut errors, &field, value, false, MAX_TEXT_LEN);
            }
        }
        Some(IdentityLinked(_)) | None => {}
    }
}

/// The partition key of an event: its strongest identifier, normalised, as
/// `kind:value`.
pub fn partition_key(event: &proto::Event) -> String {
    let customer = event.customer.clone().unwrap_or_default();
    rapport_projections::identity::identifiers_of(&customer)
        .into_iter()
        .next()
        .map(|identifier| identifier.to_string())
        .unwrap_or_else(|| {
            format!(
                "{}:{}",
                IdentifierKind::AnonymousId.as_str(),
                event.event_id
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order() -> Value {
        json!({"event_id":"0193a5b0-7c1e-7d4e-9f00-2b1c3d4e5f60","type":"order.placed","occurred_at":"2026-11-01T10:00:00Z",
               "channel":"web","customer":{"customer_id":"c-42","email":"A@B.com","phone":"+86 138 0000 0000","anonymous_id":"anon-7"},
               "data":{"order_id":"o-1","total_minor":12900,"currency":"CNY","items":[{"sku":"tea-1","quantity":2,"unit_price_minor":6450}]}})
    }

    fn errors_of(value: &Value) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut event = event_from_json(0, value, &mut errors);
        check_event(0, &mut event, &mut errors);
        errors
    }

    #[test]
    fn the_documented_example_is_valid() {
        assert_eq!(errors_of(&order()), vec![]);
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut bad = order();
        bad["event_id"] = json!("not-a-uuid");
        bad["data"]["currency"] = json!("yuan");
        bad["data"]["total_minor"] = json!("12900");
        bad["data"]["colour"] = json!("red");
        bad["customer"]["email"] = json!("nobody");
        let fields: Vec<String> = errors_of(&bad)
            .into_iter()
            .map(|error| error.field)
            .collect();
        for expected in [
            "event_id",
            "data.currency",
            "data.total_minor",
            "data.colour",
            "customer.email",
        ] {
            assert!(
                fields.contains(&expected.to_owned()),
                "{expected} missing from {fields:?}"
            );
        }
    }

    #[test]
    fn histories_from_1970_to_2100_are_accepted() {
        let at = |occurred_at: &str| {
            let mut event = order();
            event["occurred_at"] = json!(occurred_at);
            errors_of(&event)
                .into_iter()
                .map(|error| error.field)
                .collect::<Vec<_>>()
        };
        for accepted in [
            "1970-01-01T00:00:01Z",
            "1989-12-01T09:30:00+01:00",
            "2099-12-31T23:59:59Z",
        ] {
            assert!(at(accepted).is_empty(), "{accepted}");
        }
        for refused in ["1969-12-31T23:59:59Z", "2100-01-01T00:00:00Z"] {
            assert_eq!(at(refused), ["occurred_at"], "{refused}");
        }
    }

    #[test]
    fn an_event_needs_an_identifier_and_a_known_type() {
        let fields = |value: Value| {
            errors_of(&value)
                .into_iter()
                .map(|error| error.field)
                .collect::<Vec<_>>()
        };
        let mut anonymous = order();
        anonymous["customer"] = json!({});
        assert_eq!(fields(anonymous), ["customer"]);
        let mut unknown = order();
        unknown["type"] = json!("order.teleported");
        assert_eq!(fields(unknown), ["type"]);
    }

    #[test]
    fn survey_scores_are_range_checked() {
        let survey = json!({"event_id":"0193a5b0-7c1e-7d4e-9f00-2b1c3d4e5f61","type":"survey.answered","occurred_at":"2026-11-01T10:00:00Z",
                            "customer":{"email":"a@b.com"},"data":{"survey_id":"s","nps":11,"csat":0}});
        let fields: Vec<String> = errors_of(&survey)
            .into_iter()
            .map(|error| error.field)
            .collect();
        assert_eq!(fields, ["data.nps", "data.csat"]);
    }

    #[test]
    fn the_channel_defaults_from_the_type() {
        let mut errors = Vec::new();
        let mut value = order();
        value.as_object_mut().unwrap().remove("channel");
        value["type"] = json!("order.cancelled");
        value["data"] = json!({"order_id":"o-1"});
        let mut event = event_from_json(0, &value, &mut errors);
        check_event(0, &mut event, &mut errors);
        assert_eq!(errors, vec![]);
        assert_eq!(event.channel, "other");
    }

    #[test]
    fn the_strongest_identifier_keys_the_event() {
        let mut errors = Vec::new();
        let event = event_from_json(0, &order(), &mut errors);
        assert_eq!(partition_key(&event), "customer_id:c-42");
        let mut guest = order();
        guest["customer"] = json!({"anonymous_id":"anon-7","email":" A@B.com"});
        assert_eq!(
            partition_key(&event_from_json(0, &guest, &mut errors)),
            "email:a@b.com"
        );
    }
}
