//! Segment's tracking spec onto Rapport's events: one message (identify,
//! track, page, screen, alias or group) becomes zero, one or two events.
//! The rules are the table in `docs/segment.md`.
//!
//! Pure: the caller passes the time the request arrived, and every event id
//! derives from the message, so a retried batch maps to the same events.
//! SDK payloads are open: properties and traits this mapping has no field
//! for are kept as attributes or custom properties, never refused; an
//! e-commerce or email event lacking what its Rapport event needs (an
//! order without `order_id`) is kept as `custom.tracked` under its own name.

use std::collections::BTreeMap;

use rapport_projections::money::{ExtraDecimals, decimal_to_minor};
use rapport_projections::time::parse_rfc3339;
use rapport_proto::v1::{self as proto, event::Payload};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::validate::{MAX_ID_LEN, MAX_PROPERTIES, MAX_TEXT_LEN, is_email, is_phone};

/// The namespace of the event ids derived from Segment message ids.
const NAMESPACE: Uuid = Uuid::from_u128(0x3f0e_2c4a_91d7_4b8e_a6f5_0d2b_7c19_e843);

/// The calls of the tracking spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Identify,
    Track,
    Page,
    Screen,
    Alias,
    Group,
}

impl Call {
    pub const ALL: [Call; 6] = [
        Call::Identify,
        Call::Track,
        Call::Page,
        Call::Screen,
        Call::Alias,
        Call::Group,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Call::Identify => "identify",
            Call::Track => "track",
            Call::Page => "page",
            Call::Screen => "screen",
            Call::Alias => "alias",
            Call::Group => "group",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|call| call.as_str() == text)
    }
}

/// What a request adds to each of its messages.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// When ingest received the request (Segment's `receivedAt`).
    pub received_at_ms: i64,
    /// The batch's `sentAt`, for messages without their own.
    pub sent_at: Option<&'a Value>,
    /// The batch's `context`, under each message's own.
    pub context: Option<&'a Map<String, Value>>,
}

/// Why a message cannot be taken: the field (as the message names it) and
/// the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub field: String,
    pub message: String,
}

fn refuse<T>(field: &str, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        field: field.to_owned(),
        message: message.into(),
    })
}

/// The events one message stands for.
#[derive(Debug, Default)]
pub struct Mapped {
    pub events: Vec<proto::Event>,
    /// Why an e-commerce or email event was kept as `custom.tracked`.
    pub kept_as_custom: Option<String>,
}

/// Maps one message. `call` comes from the route (`/v1/track`), or, on the
/// batch routes, from the message's `type`.
pub fn map_message(
    call: Option<Call>,
    message: &Map<String, Value>,
    envelope: &Envelope<'_>,
) -> Result<Mapped, Refusal> {
    let call = match call {
        Some(call) => call,
        None => match message.get("type") {
            Some(Value::String(name)) => match Call::parse(name) {
                Some(call) => call,
                None => {
                    return refuse(
                        "type",
                        format!(
                            "must be one of identify, track, page, screen, alias, group; got {name:?}"
                        ),
                    );
                }
            },
            None | Some(Value::Null) => return refuse("type", "is required"),
            Some(_) => return refuse("type", "must be a string"),
        },
    };
    let user_id = identifier(message, "userId")?;
    let anonymous_id = identifier(message, "anonymousId")?;
    if call == Call::Alias {
        if user_id.is_none() {
            return refuse("userId", "is required by alias");
        }
    } else if user_id.is_none() && anonymous_id.is_none() {
        return refuse("userId", "userId or anonymousId is required");
    }
    let message_id = match message.get("messageId") {
        Some(Value::String(id)) if !id.trim().is_empty() => id.clone(),
        Some(Value::Number(number)) => number.to_string(),
        None | Some(Value::Null) | Some(Value::String(_)) => derived_message_id(message),
        Some(_) => return refuse("messageId", "must be a string"),
    };
    let occurred_at_ms = occurred_at(message, envelope)?;
    let context = merged_context(message, envelope.context);
    let mut template = proto::Event {
        occurred_at_ms,
        channel: channel_of(call, &context).to_owned(),
        source: source_of(&context),
        customer: Some(proto::CustomerIdentifiers {
            customer_id: user_id.clone().unwrap_or_default(),
            anonymous_id: anonymous_id.clone().unwrap_or_default(),
            ..Default::default()
        }),
        ..Default::default()
    };
    // Identifiers the person's traits carry join them to their emails and
    // calls; a value that is not a valid email or phone stays an attribute.
    let traits = object(message, "traits")?;
    let context_traits = match context.get("traits") {
        Some(Value::Object(traits)) => Some(traits),
        _ => None,
    };
    for traits in [context_traits, traits.filter(|_| call == Call::Identify)]
        .into_iter()
        .flatten()
    {
        let customer = template.customer.as_mut().expect("set above");
        if let Some(Value::String(email)) = traits.get("email")
            && is_email(email)
        {
            customer.email = email.trim().to_owned();
        }
        if let Some(Value::String(phone)) = traits.get("phone")
            && is_phone(phone)
        {
            customer.phone = phone.trim().to_owned();
        }
    }
    let id = |role: &str| {
        Uuid::new_v5(&NAMESPACE, format!("{message_id}\u{0}{role}").as_bytes()).to_string()
    };
    let event = |event_id: String, payload: Payload| proto::Event {
        event_id,
        r#type: crate::validate::type_of(&payload).to_owned(),
        payload: Some(payload),
        ..template.clone()
    };
    // alias: the previous id is the anonymous id being linked
    let linked = match call {
        Call::Alias => match identifier(message, "previousId")? {
            Some(previous_id) => Some(previous_id),
            None => return refuse("previousId", "is required by alias"),
        },
        _ => None,
    };
    let mut mapped = Mapped::default();
    match call {
        Call::Identify => {
            let profile = profile_of(traits);
            if let Some(user_id) = &user_id {
                // The first identify of a user id registers them: later
                // ones derive the same id and count once.
                let registered =
                    Uuid::new_v5(&NAMESPACE, format!("registered\u{0}{user_id}").as_bytes())
                        .to_string();
                mapped.events.push(event(
                    registered,
                    Payload::CustomerRegistered(profile.clone()),
                ));
            }
            mapped
                .events
                .push(event(id(""), Payload::CustomerUpdated(profile)));
        }
        Call::Alias => {
            let previous_id = linked.expect("read above for alias");
            if Some(&previous_id) != user_id.as_ref() {
                let mut linking = event(id(""), Payload::IdentityLinked(proto::IdentityLinked {}));
                if let Some(customer) = linking.customer.as_mut() {
                    customer.anonymous_id = previous_id;
                }
                mapped.events.push(linking);
            }
        }
        Call::Page | Call::Screen => {
            let properties = object(message, "properties")?;
            let page = match context.get("page") {
                Some(Value::Object(page)) => Some(page),
                _ => None,
            };
            let name = text_of(message.get("name"));
            let from = |key: &str| {
                text_of(properties.and_then(|properties| properties.get(key)))
                    .or_else(|| text_of(page.and_then(|page| page.get(key))))
            };
            let url = from("url")
                .or_else(|| from("path"))
                .or_else(|| {
                    name.as_ref().map(|name| match call {
                        Call::Screen => format!("screen:{name}"),
                        _ => name.clone(),
                    })
                })
                .unwrap_or_else(|| format!("({})", call.as_str()));
            mapped.events.push(event(
                id(""),
                Payload::WebPageViewed(proto::PageViewed {
                    url: clean(&url, MAX_TEXT_LEN),
                    referrer: from("referrer")
                        .map(|referrer| clean(&referrer, MAX_TEXT_LEN))
                        .unwrap_or_default(),
                    ..Default::default()
                }),
            ));
        }
        Call::Group => {
            let mut properties = BTreeMap::new();
            if let Some(group) = text_of(message.get("groupId")) {
                properties.insert("groupId".to_owned(), clean(&group, MAX_TEXT_LEN));
            }
            flatten_into(
                &mut properties,
                "",
                &Value::Object(traits.cloned().unwrap_or_default()),
            );
            mapped.events.push(event(
                id(""),
                Payload::CustomTracked(proto::CustomTracked {
                    name: "Group".to_owned(),
                    properties,
                }),
            ));
        }
        Call::Track => {
            let name = match message.get("event") {
                Some(Value::String(name)) if !name.trim().is_empty() => name.clone(),
                None | Some(Value::Null) | Some(Value::String(_)) => {
                    return refuse("event", "is required by track: the name of the action");
                }
                Some(_) => return refuse("event", "must be a string"),
            };
            let properties = object(message, "properties")?;
            let empty = Map::new();
            let properties = properties.unwrap_or(&empty);
            let (payload, kept_as_custom) = match tracked(&name, properties) {
                Ok(Some(payload)) => (payload, None),
                Ok(None) => (custom(&name, properties), None),
                Err(why) => (custom(&name, properties), Some(why)),
            };
            mapped.kept_as_custom = kept_as_custom;
            mapped.events.push(event(id(""), payload));
        }
    }
    Ok(mapped)
}

/// The Rapport event a track call with a spec name stands for: `Ok(None)`
/// for a name the spec does not give one, `Err` when the properties lack
/// what it needs.
fn tracked(name: &str, properties: &Map<String, Value>) -> Result<Option<Payload>, String> {
    let spec_name = name.trim().to_ascii_lowercase().replace('_', " ");
    let order_id = || {
        text_of(properties.get("order_id"))
            .or_else(|| text_of(properties.get("orderId")))
            .map(|id| clean(&id, MAX_ID_LEN))
            .ok_or_else(|| "it has no order_id".to_owned())
    };
    let email = |payload: fn(proto::EmailMessage) -> Payload| {
        let message_id = ["email_id", "message_id", "emailId"]
            .into_iter()
            .find_map(|key| text_of(properties.get(key)))
            .ok_or_else(|| "it has no email_id".to_owned())?;
        let campaign_id = ["campaign_id", "campaign_name", "campaignId"]
            .into_iter()
            .find_map(|key| text_of(properties.get(key)))
            .unwrap_or_default();
        let url = ["link_url", "url"]
            .into_iter()
            .find_map(|key| text_of(properties.get(key)))
            .unwrap_or_default();
        Ok::<_, String>(Some(payload(proto::EmailMessage {
            message_id: clean(&message_id, MAX_ID_LEN),
            campaign_id: clean(&campaign_id, MAX_ID_LEN),
            url: clean(&url, MAX_TEXT_LEN),
        })))
    };
    match spec_name.as_str() {
        "order completed" => {
            let order_id = order_id()?;
            let currency = currency_of(properties)?;
            let items = items_of(properties, &currency)?;
            let total = match first_amount(properties, &["total", "revenue"], &currency)? {
                Some(total) => total,
                None => items
                    .iter()
                    .map(|item| item.unit_price_minor.saturating_mul(item.quantity))
                    .fold(0_i64, i64::saturating_add),
            };
            if total < 0 {
                return Err("its total is negative".to_owned());
            }
            Ok(Some(Payload::OrderPlaced(proto::OrderPlaced {
                order_id,
                total_minor: total,
                currency,
                items,
            })))
        }
        "order refunded" => {
            let order_id = order_id()?;
            let currency = currency_of(properties)?;
            let amount = match first_amount(properties, &["total", "revenue", "amount"], &currency)?
            {
                Some(amount) => amount,
                None => items_of(properties, &currency)?
                    .iter()
                    .map(|item| item.unit_price_minor.saturating_mul(item.quantity))
                    .fold(0_i64, i64::saturating_add),
            };
            if amount <= 0 {
                return Err("it has no positive total, revenue or products to refund".to_owned());
            }
            Ok(Some(Payload::OrderRefunded(proto::OrderRefunded {
                order_id,
                amount_minor: amount,
            })))
        }
        "order cancelled" | "order canceled" => {
            Ok(Some(Payload::OrderCancelled(proto::OrderCancelled {
                order_id: order_id()?,
            })))
        }
        "email sent" | "email delivered" => email(Payload::EmailSent),
        "email opened" => email(Payload::EmailOpened),
        "email link clicked" => email(Payload::EmailClicked),
        "email bounced" => email(Payload::EmailBounced),
        "unsubscribed" | "email marked as spam" => {
            Ok(Some(Payload::ConsentChanged(proto::ConsentChanged {
                channel: "email".to_owned(),
                granted: false,
            })))
        }
        _ => Ok(None),
    }
}

fn custom(name: &str, properties: &Map<String, Value>) -> Payload {
    let mut kept = BTreeMap::new();
    flatten_into(&mut kept, "", &Value::Object(properties.clone()));
    Payload::CustomTracked(proto::CustomTracked {
        name: clean(name, MAX_ID_LEN),
        properties: kept,
    })
}

/// `currency`, upper case; USD when absent, as Segment's spec says.
fn currency_of(properties: &Map<String, Value>) -> Result<String, String> {
    match properties.get("currency") {
        None | Some(Value::Null) => Ok("USD".to_owned()),
        Some(Value::String(code))
            if code.trim().len() == 3 && code.trim().bytes().all(|b| b.is_ascii_alphabetic()) =>
        {
            Ok(code.trim().to_ascii_uppercase())
        }
        Some(other) => Err(format!("its currency {other} is not an ISO 4217 code")),
    }
}

/// The first of `keys` that holds an amount, in minor units.
fn first_amount(
    properties: &Map<String, Value>,
    keys: &[&str],
    currency: &str,
) -> Result<Option<i64>, String> {
    for key in keys {
        match properties.get(*key) {
            None | Some(Value::Null) => continue,
            Some(value) => {
                return amount(value, currency)
                    .map(Some)
                    .map_err(|reason| format!("its {key} {reason}"));
            }
        }
    }
    Ok(None)
}

/// A JSON number or numeric string in major units, as minor units;
/// digits past the currency's minor unit are rounded.
fn amount(value: &Value, currency: &str) -> Result<i64, String> {
    let text = match value {
        Value::Number(number) => number.to_string(),
        Value::String(text) => text.trim().to_owned(),
        other => return Err(format!("{other} is not an amount")),
    };
    match decimal_to_minor(&text, currency, ExtraDecimals::Round) {
        Ok(minor) => Ok(minor),
        // serde_json writes very large or small numbers with an exponent
        Err(reason) => match text.parse::<f64>() {
            Ok(major) if major.is_finite() => {
                let digits = rapport_projections::money::minor_unit_digits(currency);
                let minor = (major * 10_f64.powi(digits as i32)).round();
                if minor.abs() < 9.0e18 {
                    Ok(minor as i64)
                } else {
                    Err(format!("{text} is too large"))
                }
            }
            _ => Err(reason),
        },
    }
}

/// `products` as order items; a product without an id is left out.
fn items_of(
    properties: &Map<String, Value>,
    currency: &str,
) -> Result<Vec<proto::OrderItem>, String> {
    let Some(Value::Array(products)) = properties.get("products") else {
        return Ok(Vec::new());
    };
    let mut items = Vec::new();
    for product in products {
        let Value::Object(product) = product else {
            continue;
        };
        let Some(sku) = ["sku", "product_id", "id"]
            .into_iter()
            .find_map(|key| text_of(product.get(key)))
        else {
            continue;
        };
        let quantity = match product.get("quantity") {
            Some(Value::Number(number)) => number
                .as_i64()
                .or_else(|| {
                    number
                        .as_f64()
                        .filter(|q| q.fract() == 0.0)
                        .map(|q| q as i64)
                })
                .filter(|quantity| *quantity >= 1)
                .unwrap_or(1),
            Some(Value::String(text)) => text.trim().parse().ok().filter(|q| *q >= 1).unwrap_or(1),
            _ => 1,
        };
        let unit_price_minor = match product.get("price") {
            None | Some(Value::Null) => 0,
            Some(price) => {
                amount(price, currency).map_err(|reason| format!("a product's price {reason}"))?
            }
        };
        if unit_price_minor < 0 {
            return Err("a product's price is negative".to_owned());
        }
        items.push(proto::OrderItem {
            sku: clean(&sku, MAX_ID_LEN),
            quantity,
            unit_price_minor,
        });
    }
    Ok(items)
}

/// An identify's traits as a profile: `email`, `phone`, `name` (or
/// `firstName` and `lastName`), `city` (or `address.city`); the rest,
/// flattened with dots, as attributes.
fn profile_of(traits: Option<&Map<String, Value>>) -> proto::CustomerProfile {
    let mut profile = proto::CustomerProfile::default();
    let Some(traits) = traits else {
        return profile;
    };
    let mut rest = traits.clone();
    if let Some(Value::String(email)) = traits.get("email")
        && is_email(email)
    {
        profile.email = email.trim().to_owned();
        rest.remove("email");
    }
    if let Some(Value::String(phone)) = traits.get("phone")
        && is_phone(phone)
    {
        profile.phone = phone.trim().to_owned();
        rest.remove("phone");
    }
    let name = text_of(traits.get("name")).or_else(|| {
        let parts: Vec<String> = ["firstName", "lastName"]
            .into_iter()
            .filter_map(|key| text_of(traits.get(key)))
            .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    });
    if let Some(name) = name {
        profile.name = clean(&name, MAX_TEXT_LEN);
        for used in ["name", "firstName", "lastName"] {
            rest.remove(used);
        }
    }
    let city = text_of(traits.get("city")).or_else(|| match traits.get("address") {
        Some(Value::Object(address)) => text_of(address.get("city")),
        _ => None,
    });
    if let Some(city) = city {
        profile.city = clean(&city, MAX_TEXT_LEN);
        rest.remove("city");
    }
    flatten_into(&mut profile.attributes, "", &Value::Object(rest));
    profile
}

/// Adds `value`'s leaves under dotted keys, as text: strings as they are,
/// numbers and booleans as JSON writes them, arrays as JSON text. Stops at
/// [`MAX_PROPERTIES`] entries; keys and values are cut to their limits and
/// control characters become spaces.
fn flatten_into(out: &mut BTreeMap<String, String>, prefix: &str, value: &Value) {
    if out.len() >= MAX_PROPERTIES {
        return;
    }
    match value {
        Value::Null => {}
        Value::Object(entries) => {
            for (key, inner) in entries {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten_into(out, &path, inner);
            }
        }
        leaf => {
            let key = clean(prefix, MAX_ID_LEN);
            if key.trim().is_empty() {
                return;
            }
            let text = match leaf {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            out.insert(key, clean(&text, MAX_TEXT_LEN));
        }
    }
}

/// `text` without control characters and at most `max` bytes long.
fn clean(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for character in text.chars() {
        let character = if character.is_control() {
            ' '
        } else {
            character
        };
        if out.len() + character.len_utf8() > max {
            break;
        }
        out.push(character);
    }
    out
}

/// A string or number as text; `None` for anything else or blank text.
fn text_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) if !text.trim().is_empty() => Some(text.trim().to_owned()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// `userId`, `anonymousId` or `previousId`: a string (or a number, which
/// some clients send) of at most 128 bytes.
fn identifier(message: &Map<String, Value>, key: &str) -> Result<Option<String>, Refusal> {
    let text = match message.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) => text.trim().to_owned(),
        Some(Value::Number(number)) => number.to_string(),
        Some(_) => return refuse(key, "must be a string"),
    };
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() > MAX_ID_LEN {
        return refuse(key, format!("must be at most {MAX_ID_LEN} bytes"));
    }
    if text.chars().any(char::is_control) {
        return refuse(key, "must not contain control characters");
    }
    Ok(Some(text))
}

fn object<'a>(
    message: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, Refusal> {
    match message.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(object)) => Ok(Some(object)),
        Some(_) => refuse(key, "must be an object"),
    }
}

fn timestamp(value: Option<&Value>, field: &str) -> Result<Option<i64>, Refusal> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => parse_rfc3339(text.trim()).map(Some).map_err(|error| Refusal {
            field: field.to_owned(),
            message: format!("must be an ISO 8601 time with a zone, such as 2026-11-01T10:00:00.000Z: {error}"),
        }),
        Some(_) => refuse(field, "must be an ISO 8601 time as a string"),
    }
}

/// When the message happened, corrected for the sender's clock as Segment
/// does: `receivedAt − (sentAt − originalTimestamp)` when the sender said
/// when it sent the message; its own time otherwise; the time it arrived
/// when it says nothing.
fn occurred_at(message: &Map<String, Value>, envelope: &Envelope<'_>) -> Result<i64, Refusal> {
    let original = match timestamp(message.get("originalTimestamp"), "originalTimestamp")? {
        Some(original) => Some(original),
        None => timestamp(message.get("timestamp"), "timestamp")?,
    };
    let sent_at = match timestamp(message.get("sentAt"), "sentAt")? {
        Some(sent_at) => Some(sent_at),
        None => timestamp(envelope.sent_at, "sentAt")?,
    };
    let at = match (original, sent_at) {
        (Some(original), Some(sent_at)) => envelope
            .received_at_ms
            .saturating_sub(sent_at.saturating_sub(original)),
        (Some(original), None) => original,
        (None, _) => envelope.received_at_ms,
    };
    if !(1..4_102_444_800_000).contains(&at) {
        return refuse(
            "timestamp",
            "must lie between 1970-01-01 and 2100-01-01 (after correcting for the sender's clock with sentAt)",
        );
    }
    Ok(at)
}

/// The batch's context under the message's own: the message wins.
fn merged_context(
    message: &Map<String, Value>,
    batch: Option<&Map<String, Value>>,
) -> Map<String, Value> {
    let mut context = batch.cloned().unwrap_or_default();
    if let Some(Value::Object(own)) = message.get("context") {
        for (key, value) in own {
            context.insert(key.clone(), value.clone());
        }
    }
    context
}

/// `app` for screens and mobile devices, `web` where a browser or page is
/// named, and the event type's own channel otherwise.
fn channel_of(call: Call, context: &Map<String, Value>) -> &'static str {
    let device = context
        .get("device")
        .and_then(|device| device.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if call == Call::Screen || matches!(device, "ios" | "android") {
        "app"
    } else if call == Call::Page
        || context.contains_key("page")
        || context.contains_key("userAgent")
    {
        "web"
    } else {
        ""
    }
}

/// `segment/<library>` from `context.library.name`, so the log says which
/// SDK sent an event; ingest's own tag when the library is not named.
fn source_of(context: &Map<String, Value>) -> String {
    match context
        .get("library")
        .and_then(|library| library.get("name"))
        .and_then(Value::as_str)
    {
        Some(name) if !name.trim().is_empty() => {
            clean(&format!("segment/{}", name.trim()), MAX_ID_LEN)
        }
        _ => String::new(),
    }
}

/// A message id for a message sent without one, from everything in it but
/// `sentAt` and `writeKey` (which a retry may change): the same message
/// sent twice gets the same id.
fn derived_message_id(message: &Map<String, Value>) -> String {
    let mut kept = message.clone();
    for volatile in ["sentAt", "writeKey", "messageId", "_metadata"] {
        kept.remove(volatile);
    }
    let canonical = canonical(&Value::Object(kept)).to_string();
    format!("derived-{}", Uuid::new_v5(&NAMESPACE, canonical.as_bytes()))
}

/// `value` with every object's keys in sorted order, however serde_json
/// was built to keep them.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(entries) => {
            let mut keys: Vec<&String> = entries.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|key| (key.clone(), canonical(&entries[key])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RECEIVED: i64 = 1_780_000_000_000;

    fn map(call: Option<Call>, message: Value) -> Result<Mapped, Refusal> {
        let envelope = Envelope {
            received_at_ms: RECEIVED,
            sent_at: None,
            context: None,
        };
        map_message(call, message.as_object().unwrap(), &envelope)
    }

    fn payload(mapped: &Mapped, index: usize) -> &Payload {
        mapped.events[index].payload.as_ref().unwrap()
    }

    #[test]
    fn order_completed_becomes_an_order_in_minor_units_of_its_currency() {
        for (currency, total, minor) in [
            ("USD", json!(129.99), 12_999),
            ("JPY", json!(12900), 12_900),
            ("BHD", json!("1.234"), 1_234),
            ("cny", json!(0.30000000000000004), 30),
        ] {
            let mapped = map(
                None,
                json!({"type": "track", "event": "Order Completed", "userId": "u1", "messageId": "m1",
                    "properties": {"order_id": "o-1", "total": total, "currency": currency,
                        "products": [{"product_id": "p-1", "price": 1, "quantity": 2}, {"name": "no id"}]}}),
            )
            .unwrap();
            let Payload::OrderPlaced(order) = payload(&mapped, 0) else {
                panic!("{mapped:?}")
            };
            assert_eq!(order.total_minor, minor, "{currency}");
            assert_eq!(order.currency, currency.to_ascii_uppercase());
            assert_eq!(order.items.len(), 1);
            assert_eq!(order.items[0].quantity, 2);
            assert_eq!(
                mapped.events[0].customer.as_ref().unwrap().customer_id,
                "u1"
            );
        }
    }

    #[test]
    fn an_order_without_a_total_sums_its_products_and_without_an_id_is_kept_as_custom() {
        let mapped = map(
            Some(Call::Track),
            json!({"event": "Order Completed", "anonymousId": "a1",
                "properties": {"order_id": 7, "products": [{"sku": "s", "price": "2.50", "quantity": 3}]}}),
        )
        .unwrap();
        let Payload::OrderPlaced(order) = payload(&mapped, 0) else {
            panic!()
        };
        assert_eq!(
            (
                order.order_id.as_str(),
                order.total_minor,
                order.currency.as_str()
            ),
            ("7", 750, "USD")
        );
        let kept = map(
            Some(Call::Track),
            json!({"event": "Order Completed", "anonymousId": "a1", "properties": {"total": 5, "coupon": "X"}}),
        )
        .unwrap();
        assert_eq!(kept.kept_as_custom.as_deref(), Some("it has no order_id"));
        let Payload::CustomTracked(custom) = payload(&kept, 0) else {
            panic!()
        };
        assert_eq!(custom.name, "Order Completed");
        assert_eq!(custom.properties["coupon"], "X");
        assert_eq!(custom.properties["total"], "5");
    }

    #[test]
    fn refunds_cancellations_and_email_events_follow_the_spec_names() {
        let refund = map(
            Some(Call::Track),
            json!({"event": "Order Refunded", "userId": "u", "properties": {"order_id": "o", "total": 10, "currency": "EUR"}}),
        )
        .unwrap();
        assert!(matches!(payload(&refund, 0), Payload::OrderRefunded(r) if r.amount_minor == 1000));
        let cancelled = map(
            Some(Call::Track),
            json!({"event": "order_cancelled", "userId": "u", "properties": {"order_id": "o"}}),
        )
        .unwrap();
        assert!(matches!(payload(&cancelled, 0), Payload::OrderCancelled(_)));
        let opened = map(
            Some(Call::Track),
            json!({"event": "Email Opened", "userId": "u", "properties": {"email_id": "e-1", "campaign_name": "autumn"}}),
        )
        .unwrap();
        assert!(
            matches!(payload(&opened, 0), Payload::EmailOpened(m) if m.message_id == "e-1" && m.campaign_id == "autumn")
        );
        let unsubscribed = map(
            Some(Call::Track),
            json!({"event": "Unsubscribed", "userId": "u"}),
        )
        .unwrap();
        assert!(
            matches!(payload(&unsubscribed, 0), Payload::ConsentChanged(c) if c.channel == "email" && !c.granted)
        );
    }

    #[test]
    fn anything_else_is_a_custom_event_with_its_properties_flattened() {
        let mapped = map(
            Some(Call::Track),
            json!({"event": "Wishlist Added", "userId": "u",
                "properties": {"sku": "tea", "list": {"name": "gifts", "size": 3}, "tags": ["a", "b"], "note": "two\nlines", "none": null}}),
        )
        .unwrap();
        let Payload::CustomTracked(custom) = payload(&mapped, 0) else {
            panic!()
        };
        assert_eq!(custom.name, "Wishlist Added");
        assert_eq!(custom.properties["list.name"], "gifts");
        assert_eq!(custom.properties["list.size"], "3");
        assert_eq!(custom.properties["tags"], r#"["a","b"]"#);
        assert_eq!(custom.properties["note"], "two lines");
        assert!(!custom.properties.contains_key("none"));
        let many: Map<String, Value> = (0..150).map(|i| (format!("k{i:03}"), json!(i))).collect();
        let mapped = map(
            Some(Call::Track),
            json!({"event": "Big", "userId": "u", "properties": many}),
        )
        .unwrap();
        let Payload::CustomTracked(custom) = payload(&mapped, 0) else {
            panic!()
        };
        assert_eq!(custom.properties.len(), MAX_PROPERTIES);
    }

    #[test]
    fn identify_registers_once_per_user_and_updates_with_every_call() {
        let first = map(
            Some(Call::Identify),
            json!({"userId": "u1", "anonymousId": "a1", "messageId": "m1",
                "traits": {"email": "Ada@Example.com", "firstName": "Ada", "lastName": "Lovelace",
                    "address": {"city": "London", "street": "1 Lane"}, "plan": "gold", "phone": "not a phone"}}),
        )
        .unwrap();
        let second = map(
            Some(Call::Identify),
            json!({"userId": "u1", "messageId": "m2", "traits": {"plan": "silver"}}),
        )
        .unwrap();
        assert_eq!(first.events.len(), 2);
        assert_eq!(first.events[0].r#type, "customer.registered");
        assert_eq!(first.events[1].r#type, "customer.updated");
        assert_eq!(
            first.events[0].event_id, second.events[0].event_id,
            "one registration per user id"
        );
        assert_ne!(first.events[1].event_id, second.events[1].event_id);
        let customer = first.events[0].customer.as_ref().unwrap();
        assert_eq!(
            (
                customer.customer_id.as_str(),
                customer.anonymous_id.as_str(),
                customer.email.as_str()
            ),
            ("u1", "a1", "Ada@Example.com")
        );
        let Payload::CustomerRegistered(profile) = payload(&first, 0) else {
            panic!()
        };
        assert_eq!(profile.name, "Ada Lovelace");
        assert_eq!(profile.city, "London");
        assert_eq!(profile.attributes["plan"], "gold");
        assert_eq!(profile.attributes["address.street"], "1 Lane");
        assert_eq!(
            profile.attributes["phone"], "not a phone",
            "an invalid phone stays an attribute"
        );
        let anonymous = map(
            Some(Call::Identify),
            json!({"anonymousId": "a9", "traits": {"email": "x@y.io"}}),
        )
        .unwrap();
        assert_eq!(anonymous.events.len(), 1);
        assert_eq!(anonymous.events[0].r#type, "customer.updated");
    }

    #[test]
    fn alias_links_the_previous_id_and_pages_and_screens_are_views() {
        let alias = map(
            None,
            json!({"type": "alias", "userId": "u1", "previousId": "a1"}),
        )
        .unwrap();
        assert_eq!(alias.events[0].r#type, "identity.linked");
        let customer = alias.events[0].customer.as_ref().unwrap();
        assert_eq!(
            (
                customer.customer_id.as_str(),
                customer.anonymous_id.as_str()
            ),
            ("u1", "a1")
        );
        assert!(
            map(
                None,
                json!({"type": "alias", "userId": "u1", "previousId": "u1"})
            )
            .unwrap()
            .events
            .is_empty()
        );
        assert_eq!(
            map(None, json!({"type": "alias", "userId": "u1"}))
                .unwrap_err()
                .field,
            "previousId"
        );
        let page = map(
            Some(Call::Page),
            json!({"anonymousId": "a", "name": "Tea", "context": {"page": {"url": "https://shop.example/tea", "referrer": "https://s.example/"}}}),
        )
        .unwrap();
        assert!(
            matches!(payload(&page, 0), Payload::WebPageViewed(v) if v.url == "https://shop.example/tea" && v.referrer == "https://s.example/")
        );
        assert_eq!(page.events[0].channel, "web");
        let screen = map(
            Some(Call::Screen),
            json!({"anonymousId": "a", "name": "Basket"}),
        )
        .unwrap();
        assert!(
            matches!(payload(&screen, 0), Payload::WebPageViewed(v) if v.url == "screen:Basket")
        );
        assert_eq!(screen.events[0].channel, "app");
        let group = map(
            Some(Call::Group),
            json!({"userId": "u", "groupId": "g-1", "traits": {"name": "Acme"}}),
        )
        .unwrap();
        assert!(
            matches!(payload(&group, 0), Payload::CustomTracked(c) if c.name == "Group" && c.properties["groupId"] == "g-1")
        );
    }

    #[test]
    fn clocks_are_corrected_with_sent_at() {
        // The device's clock is an hour fast: it stamped the event at 10:00
        // and sent it at 10:01 by its clock; it arrived at RECEIVED.
        let envelope = Envelope {
            received_at_ms: RECEIVED,
            sent_at: Some(&json!("2026-06-01T10:01:00Z")),
            context: None,
        };
        let message = json!({"type": "track", "event": "E", "userId": "u", "timestamp": "2026-06-01T10:00:00Z"});
        let mapped = map_message(None, message.as_object().unwrap(), &envelope).unwrap();
        assert_eq!(mapped.events[0].occurred_at_ms, RECEIVED - 60_000);
        // No sentAt: the message's own time, as for a historical import
        let old = map(None, json!({"type": "track", "event": "E", "userId": "u", "timestamp": "1999-12-31T23:00:00.123456+00:00"})).unwrap();
        assert_eq!(old.events[0].occurred_at_ms, 946_681_200_123);
        let now = map(None, json!({"type": "track", "event": "E", "userId": "u"})).unwrap();
        assert_eq!(now.events[0].occurred_at_ms, RECEIVED);
        let bad = map(
            None,
            json!({"type": "track", "event": "E", "userId": "u", "timestamp": "yesterday"}),
        )
        .unwrap_err();
        assert_eq!(bad.field, "timestamp");
    }

    #[test]
    fn a_message_without_an_id_gets_the_same_derived_id_every_time() {
        let message =
            json!({"type": "track", "event": "E", "userId": "u", "properties": {"a": 1, "b": 2}});
        let again = json!({"properties": {"b": 2, "a": 1}, "userId": "u", "event": "E", "type": "track", "sentAt": "2026-01-01T00:00:00Z"});
        let other =
            json!({"type": "track", "event": "E", "userId": "u", "properties": {"a": 1, "b": 3}});
        let id = |message: Value| map(None, message).unwrap().events[0].event_id.clone();
        assert_eq!(id(message.clone()), id(again));
        assert_ne!(id(message), id(other));
    }

    #[test]
    fn refusals_name_the_field() {
        for (message, field) in [
            (json!({"type": "track", "event": "E"}), "userId"),
            (json!({"type": "fly", "userId": "u"}), "type"),
            (json!({"userId": "u"}), "type"),
            (json!({"type": "track", "userId": "u"}), "event"),
            (
                json!({"type": "track", "event": "E", "userId": {"a": 1}}),
                "userId",
            ),
            (
                json!({"type": "track", "event": "E", "userId": "u".repeat(129)}),
                "userId",
            ),
            (
                json!({"type": "track", "event": "E", "userId": "u", "properties": [1]}),
                "properties",
            ),
            (
                json!({"type": "track", "event": "E", "userId": "u", "timestamp": "1900-01-01T00:00:00Z"}),
                "timestamp",
            ),
        ] {
            assert_eq!(
                map(None, message.clone()).unwrap_err().field,
                field,
                "{message}"
            );
        }
    }
}
