//! `rapportctl import orders|order-lines|customers FILE.csv`: loads a shop's
//! history from CSV through ingest's `POST /v1/events`, so imported events
//! are checked and sealed like any other. Columns are found by their header
//! names. Each row is checked with ingest's own rules before it is sent; a
//! row that breaks one goes to a rejects file with its line and the reason.
//! Event ids are derived from the rows (UUID v5 of the order id or the
//! customer's identifiers), so an import run again sends the same events
//! and the log counts each once; a checkpoint beside the file lets
//! `--resume` skip what ingest already acknowledged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rapport_ingest::validate::{MAX_BODY_BYTES, MAX_EVENT_BYTES};
use rapport_projections::money::{ExtraDecimals, decimal_to_minor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::progress::Progress;

/// What the rows are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// One row per order: `order.placed` events.
    Orders,
    /// One row per line item, an order's lines one after another (the UCI
    /// Online Retail shape): one `order.placed` per order; cancellations
    /// (`C…` with negative quantities) as refunds of earlier orders.
    OrderLines,
    /// One row per customer: `customer.registered` events.
    Customers,
}

impl Kind {
    /// The name on the command line.
    pub(crate) fn parse(name: &str) -> Option<Kind> {
        match name {
            "orders" => Some(Kind::Orders),
            "order-lines" => Some(Kind::OrderLines),
            "customers" => Some(Kind::Customers),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Orders => "orders",
            Kind::OrderLines => "order-lines",
            Kind::Customers => "customers",
        }
    }
}

/// Which comes first in a date written with slashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DateOrder {
    /// `12/13/2010`: month, day, year.
    MonthFirst,
    /// `13/12/2010`: day, month, year.
    DayFirst,
}

impl DateOrder {
    /// The name on the command line.
    pub(crate) fn parse(name: &str) -> Option<DateOrder> {
        match name {
            "mdy" => Some(DateOrder::MonthFirst),
            "dmy" => Some(DateOrder::DayFirst),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            DateOrder::MonthFirst => "mdy",
            DateOrder::DayFirst => "dmy",
        }
    }

    fn shape(self) -> &'static str {
        match self {
            DateOrder::MonthFirst => "month/day/year",
            DateOrder::DayFirst => "day/month/year",
        }
    }
}

/// How the dates of a file are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Dates {
    /// The order of slash dates; none: a slash date is refused.
    order: Option<DateOrder>,
    /// The UTC offset, in minutes, of dates that do not give one.
    offset_minutes: i32,
}

/// The namespace of imported event ids (UUID v5), so the same row always
/// gives the same id.
const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6a1c_9f0e_44b1_4c5e_9a3d_2f6b_8e71_c0d4);

/// Retries of a batch ingest answers 429 or 503.
const RETRIES: u32 = 30;

/// A request's body stays this far below ingest's limit: the envelope
/// around the events and the commas between them.
const BODY_BUDGET: usize = MAX_BODY_BYTES - 16 * 1024;

/// The header names a column may have, the first one the documented name.
/// Headers are compared by their letters and digits only, case aside, so
/// `Customer ID`, `customer_id` and `CustomerID` are one name.
const ORDER_COLUMNS: &[&[&str]] = &[
    &["order_id", "order"],
    &["occurred_at", "date", "ordered_at", "created_at"],
    &["customer_id", "customer"],
    &["email"],
    &["phone"],
    &["total", "amount"],
    &["total_minor"],
    &["currency"],
];
const ORDER_LINE_COLUMNS: &[&[&str]] = &[
    &[
        "order_id",
        "invoice_no",
        "invoice",
        "order",
        "invoice_number",
    ],
    &[
        "occurred_at",
        "invoice_date",
        "date",
        "ordered_at",
        "created_at",
    ],
    &["customer_id", "customer"],
    &["email"],
    &["phone"],
    &["sku", "stock_code", "product_id"],
    &["quantity", "qty"],
    &["unit_price", "price"],
    &["unit_price_minor"],
    &["currency"],
];
const CUSTOMER_COLUMNS: &[&[&str]] = &[
    &["customer_id", "customer"],
    &[
        "occurred_at",
        "date",
        "registered_at",
        "created_at",
        "signed_up_at",
    ],
    &["email"],
    &["phone"],
    &["name"],
    &["city"],
    &["channel"],
];

pub(crate) struct Options {
    pub(crate) kind: Kind,
    pub(crate) file: PathBuf,
    pub(crate) ingest_url: String,
    pub(crate) key: Option<String>,
    pub(crate) dry_run: bool,
    pub(crate) rejects: Option<PathBuf>,
    pub(crate) batch: usize,
    /// Batches in flight at once.
    pub(crate) parallel: usize,
    /// The currency of rows without a currency column.
    pub(crate) currency: Option<String>,
    /// The channel of rows without a channel column; none: the event
    /// type's own (ingest's default).
    pub(crate) channel: Option<String>,
    /// The order of slash dates; none: what the file itself settles.
    pub(crate) date_order: Option<DateOrder>,
    /// The UTC offset, in minutes, of dates that do not give one.
    pub(crate) utc_offset_minutes: i32,
    /// Skip the rows the checkpoint beside the file says are done.
    pub(crate) resume: bool,
}

/// What an import did.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    /// Rows read and handled by this run (after the checkpoint, resuming).
    pub(crate) rows: u64,
    pub(crate) sent: u64,
    pub(crate) refused: u64,
}

/// Where each known column is, by its documented name.
struct Columns {
    index: HashMap<&'static str, usize>,
    /// Customers: columns kept as attributes, by header.
    extra: Vec<(String, usize)>,
}

/// A header's letters and digits, lower-cased: how headers are compared.
fn header_key(header: &str) -> String {
    header
        .chars()
        .filter(|character| character.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

impl Columns {
    fn find(headers: &csv::StringRecord, kind: Kind) -> anyhow::Result<Self> {
        let known: &[&[&str]] = match kind {
            Kind::Orders => ORDER_COLUMNS,
            Kind::OrderLines => ORDER_LINE_COLUMNS,
            Kind::Customers => CUSTOMER_COLUMNS,
        };
        let keys: Vec<String> = headers.iter().map(header_key).collect();
        let mut index = HashMap::new();
        let mut used = HashSet::new();
        for names in known {
            let wanted: Vec<String> = names.iter().map(|name| header_key(name)).collect();
            if let Some(position) = keys.iter().position(|key| wanted.contains(key)) {
                index.insert(names[0], position);
                used.insert(position);
            }
        }
        // Attributes keep a readable name: `Loyalty Tier` → `loyalty_tier`.
        let extra = headers
            .iter()
            .map(|header| header.trim().to_ascii_lowercase().replace([' ', '-'], "_"))
            .enumerate()
            .filter(|(position, header)| !used.contains(position) && !header.is_empty())
            .map(|(position, header)| (header, position))
            .collect();
        let columns = Columns { index, extra };
        let need = |name: &str| {
            if columns.index.contains_key(name) {
                Ok(())
            } else {
                bail!(
                    "the file has no `{name}` column (headers: {})",
                    headers.iter().collect::<Vec<_>>().join(", ")
                )
            }
        };
        need("occurred_at")?;
        match kind {
            Kind::Orders => {
                need("order_id")?;
                if !columns.has("total") && !columns.has("total_minor") {
                    bail!("the file has neither a `total` nor a `total_minor` column");
                }
            }
            Kind::OrderLines => {
                need("order_id")?;
                need("sku")?;
                need("quantity")?;
                if !columns.has("unit_price") && !columns.has("unit_price_minor") {
                    bail!("the file has neither a `unit_price` nor a `unit_price_minor` column");
                }
            }
            Kind::Customers => {}
        }
        if !["customer_id", "email", "phone"]
            .iter()
            .any(|name| columns.has(name))
        {
            bail!(
                "the file has none of the columns `customer_id`, `email`, `phone`: nothing says whose a row is"
            );
        }
        Ok(columns)
    }

    fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn get<'a>(&self, record: &'a csv::StringRecord, name: &str) -> &'a str {
        self.index
            .get(name)
            .and_then(|position| record.get(*position))
            .map_or("", str::trim)
    }

    /// The row's customer identifiers, those it has.
    fn customer(&self, record: &csv::StringRecord) -> Map<String, Value> {
        ["customer_id", "email", "phone"]
            .into_iter()
            .filter_map(|name| {
                let value = self.get(record, name);
                (!value.is_empty()).then(|| (name.to_owned(), json!(value)))
            })
            .collect()
    }
}

/// `Z`, or `+01:00`, `-05:30`: how an offset is written in RFC 3339.
fn offset_text(minutes: i32) -> String {
    if minutes == 0 {
        return "Z".to_owned();
    }
    let sign = if minutes < 0 { '-' } else { '+' };
    let minutes = minutes.unsigned_abs();
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

/// `--utc-offset`: `Z`, `UTC`, `0`, `+01:00`, `-0530`, `+01`, in minutes.
pub(crate) fn parse_utc_offset(text: &str) -> Result<i32, String> {
    let text = text.trim();
    if ["z", "utc", "gmt", "0", "+0", "-0"].contains(&text.to_ascii_lowercase().as_str()) {
        return Ok(0);
    }
    let refuse = || format!("{text:?} is not a UTC offset: give one such as +01:00, -05:30 or Z");
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text.as_bytes()[1..]),
        Some(b'-') => (-1, &text.as_bytes()[1..]),
        _ => return Err(refuse()),
    };
    let (hours, minutes) = match rest {
        [h1, h2] => ([*h1, *h2], [b'0', b'0']),
        [h1, h2, m1, m2] | [h1, h2, b':', m1, m2] => ([*h1, *h2], [*m1, *m2]),
        _ => return Err(refuse()),
    };
    let value = |digits: [u8; 2]| {
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| i32::from(digits[0] - b'0') * 10 + i32::from(digits[1] - b'0'))
    };
    let (Some(hours), Some(minutes)) = (value(hours), value(minutes)) else {
        return Err(refuse());
    };
    if minutes > 59 || hours * 60 + minutes > 14 * 60 {
        return Err(format!("{text:?}: UTC offsets run from -14:00 to +14:00"));
    }
    Ok(sign * (hours * 60 + minutes))
}

/// The two numbers before the year of a slash date, if `text` is one.
fn slash_fields(text: &str) -> Option<(u32, u32)> {
    let date = text.trim().split([' ', 'T']).next()?;
    let mut parts = date.split('/');
    let first = parts.next()?.parse().ok()?;
    let second = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((first, second))
}

/// What the slash dates of a file say about their order: the first line
/// whose date can only be month first, and the first that can only be day
/// first.
#[derive(Debug, Default)]
struct SlashDates {
    first_seen: Option<(u64, String)>,
    month_first: Option<(u64, String)>,
    day_first: Option<(u64, String)>,
}

impl SlashDates {
    fn observe(&mut self, line: u64, text: &str) {
        let Some((first, second)) = slash_fields(text) else {
            return;
        };
        let noted = || Some((line, text.trim().to_owned()));
        if self.first_seen.is_none() {
            self.first_seen = noted();
        }
        if first > 12 && second <= 12 && self.day_first.is_none() {
            self.day_first = noted();
        }
        if second > 12 && first <= 12 && self.month_first.is_none() {
            self.month_first = noted();
        }
    }

    /// The order to read slash dates in: `given`, else the one the file
    /// proves; a file that proves neither (or both) is refused before
    /// anything is sent, rather than have each of its dates refused.
    fn settle(&self, given: Option<DateOrder>) -> anyhow::Result<Option<DateOrder>> {
        if given.is_some() {
            return Ok(given);
        }
        match (&self.month_first, &self.day_first, &self.first_seen) {
            (Some((month_line, month)), Some((day_line, day)), _) => bail!(
                "the file's slash dates disagree: {month:?} (line {month_line}) can only be month/day/year, \
                 {day:?} (line {day_line}) only day/month/year; fix the file, or give --date-order mdy or dmy \
                 to refuse the rows of the other kind"
            ),
            (Some(_), None, _) => Ok(Some(DateOrder::MonthFirst)),
            (None, Some(_), _) => Ok(Some(DateOrder::DayFirst)),
            (None, None, Some((line, text))) => bail!(
                "dates such as {text:?} (line {line}) may be month/day/year or day/month/year, and no \
                 date in the file settles which: give --date-order mdy or dmy"
            ),
            (None, None, None) => Ok(None),
        }
    }
}

/// A date as RFC 3339: `2024-03-01`, `2024-03-01 10:00[:00]`,
/// `2024-03-01T10:00:00`, RFC 3339 itself, or with `dates.order` the slash
/// forms `M/D/YYYY H:MM[:SS]` and `D/M/YYYY …`. A date without an offset
/// is read at `dates.offset_minutes` (UTC unless `--utc-offset`).
fn timestamp(text: &str, dates: Dates) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("occurred_at is empty".to_owned());
    }
    let invalid = |reason: &str| format!("occurred_at {text:?}: {reason}");
    let (date, time) = match text.find([' ', 'T', 't']) {
        Some(at) => (&text[..at], text[at + 1..].trim()),
        None => (text, ""),
    };
    let number = |part: &str, widths: std::ops::RangeInclusive<usize>| {
        (widths.contains(&part.len()) && part.bytes().all(|byte| byte.is_ascii_digit()))
            .then(|| part.parse::<u32>().ok())
            .flatten()
    };
    let (year, month, day) = if date.contains('/') {
        let order = dates.order.ok_or_else(|| {
            invalid("a date with slashes needs --date-order mdy or dmy (month or day first)")
        })?;
        let parts: Vec<&str> = date.split('/').collect();
        let fields = match parts[..] {
            [first, second, year] => number(first, 1..=2)
                .zip(number(second, 1..=2))
                .zip(number(year, 4..=4)),
            _ => None,
        };
        let Some(((first, second), year)) = fields else {
            return Err(invalid(&format!(
                "expected {} with a four-digit year",
                order.shape()
            )));
        };
        let (month, day) = match order {
            DateOrder::MonthFirst => (first, second),
            DateOrder::DayFirst => (second, first),
        };
        if !(1..=12).contains(&month) {
            return Err(invalid(&format!(
                "read as {}, {month} is not a month",
                order.shape()
            )));
        }
        (year, month, day)
    } else {
        let parts: Vec<&str> = date.split('-').collect();
        let fields = match parts[..] {
            [year, month, day] => number(year, 4..=4)
                .zip(number(month, 2..=2))
                .zip(number(day, 2..=2)),
            _ => None,
        };
        let Some(((year, month), day)) = fields else {
            return Err(invalid(
                "expected YYYY-MM-DD[ HH:MM[:SS]], RFC 3339 or, with --date-order, M/D/YYYY or D/M/YYYY",
            ));
        };
        (year, month, day)
    };
    // The time of day, and the offset when the text gives one.
    let (clock, zone) = if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        (clock, Some("Z".to_owned()))
    } else if let Some(at) = time.find(['+', '-']) {
        (&time[..at], Some(time[at..].to_owned()))
    } else {
        (time, None)
    };
    let clock = if clock.is_empty() {
        "00:00:00".to_owned()
    } else {
        let parts: Vec<&str> = clock.split(':').collect();
        let (hour, minute, second) = match parts[..] {
            [hour, minute] => (hour, minute, "00"),
            [hour, minute, second] => (hour, minute, second),
            _ => return Err(invalid("expected a time of day as H:MM or H:MM:SS")),
        };
        let whole_second = second.split_once('.').map_or(second, |(whole, _)| whole);
        if number(hour, 1..=2).is_none()
            || number(minute, 2..=2).is_none()
            || number(whole_second, 2..=2).is_none()
        {
            return Err(invalid("expected a time of day as H:MM or H:MM:SS"));
        }
        format!("{hour:0>2}:{minute}:{second}")
    };
    let zone = zone.unwrap_or_else(|| offset_text(dates.offset_minutes));
    let candidate = format!("{year:04}-{month:02}-{day:02}T{clock}{zone}");
    rapport_projections::time::parse_rfc3339(&candidate)
        .map(|_| candidate)
        .map_err(|error| invalid(&error.to_string()))
}

/// Epoch milliseconds of a timestamp [`timestamp`] made.
fn epoch_ms(timestamp: &str) -> i64 {
    rapport_projections::time::parse_rfc3339(timestamp).unwrap_or(i64::MIN)
}

/// A decimal amount in major units as minor units of `currency`.
fn minor_units(text: &str, currency: &str) -> Result<i64, String> {
    decimal_to_minor(text, currency, ExtraDecimals::Refuse)
        .map_err(|reason| format!("total {reason}"))
}

/// How rows become events: the columns and the options that shape events.
struct Reading<'a> {
    columns: &'a Columns,
    currency: Option<&'a str>,
    channel: Option<&'a str>,
    dates: Dates,
}

impl Reading<'_> {
    /// The row's currency: its column, else `--currency`.
    fn currency(&self, record: &csv::StringRecord) -> Result<String, String> {
        match self.columns.get(record, "currency") {
            "" => self
                .currency
                .map(str::to_owned)
                .ok_or_else(|| "currency is empty (give --currency for files without one)".into()),
            currency => Ok(currency.to_ascii_uppercase()),
        }
    }

    /// An event of `kind` with the envelope every imported event has.
    fn event(
        &self,
        kind: &str,
        id: uuid::Uuid,
        occurred_at: &str,
        customer: &Map<String, Value>,
        data: Value,
    ) -> Value {
        let mut event = json!({
            "event_id": id.to_string(),
            "type": kind,
            "occurred_at": occurred_at,
            "customer": customer,
            "data": data,
        });
        if let Some(channel) = self.channel {
            event["channel"] = json!(channel);
        }
        event
    }
}

/// The event a row of an orders or customers file stands for, or why it
/// cannot be one.
fn event_of(
    kind: Kind,
    reading: &Reading<'_>,
    record: &csv::StringRecord,
) -> Result<Value, String> {
    let columns = reading.columns;
    let occurred_at = timestamp(columns.get(record, "occurred_at"), reading.dates)?;
    let customer = columns.customer(record);
    if customer.is_empty() {
        return Err("no customer_id, email or phone: nothing says whose the row is".to_owned());
    }
    match kind {
        Kind::Orders | Kind::OrderLines => {
            let order_id = columns.get(record, "order_id");
            if order_id.is_empty() {
                return Err("order_id is empty".to_owned());
            }
            let currency = reading.currency(record)?;
            let total_minor = match columns.get(record, "total_minor") {
                "" => minor_units(columns.get(record, "total"), &currency)?,
                text => text
                    .parse::<i64>()
                    .map_err(|_| format!("total_minor {text:?} is not a whole number"))?,
            };
            Ok(reading.event(
                "order.placed",
                NAMESPACE.new_v5_parts(&["order.placed", order_id]),
                &occurred_at,
                &customer,
                json!({"order_id": order_id, "total_minor": total_minor, "currency": currency}),
            ))
        }
        Kind::Customers => {
            let mut data = Map::new();
            for name in ["name", "email", "phone", "city"] {
                let value = columns.get(record, name);
                if !value.is_empty() {
                    data.insert(name.to_owned(), json!(value));
                }
            }
            let attributes: Map<String, Value> = columns
                .extra
                .iter()
                .filter_map(|(header, position)| {
                    let value = record.get(*position)?.trim();
                    (!value.is_empty()).then(|| (header.clone(), json!(value)))
                })
                .collect();
            if !attributes.is_empty() {
                data.insert("attributes".to_owned(), Value::Object(attributes));
            }
            let mut parts = vec!["customer.registered"];
            parts.extend(
                ["customer_id", "email", "phone"]
                    .iter()
                    .map(|name| columns.get(record, name)),
            );
            let mut event = json!({
                "event_id": NAMESPACE.new_v5_parts(&parts).to_string(),
                "type": "customer.registered",
                "occurred_at": occurred_at,
                "customer": customer,
                "data": data,
            });
            // A channel column wins over --channel.
            match columns.get(record, "channel") {
                "" => {
                    if let Some(channel) = reading.channel {
                        event["channel"] = json!(channel);
                    }
                }
                channel => event["channel"] = json!(channel),
            }
            Ok(event)
        }
    }
}

trait NewV5 {
    fn new_v5_parts(&self, parts: &[&str]) -> uuid::Uuid;
}

impl NewV5 for uuid::Uuid {
    /// The parts joined with a separator no part can hold unescaped.
    fn new_v5_parts(&self, parts: &[&str]) -> uuid::Uuid {
        let joined: Vec<String> = parts
            .iter()
            .map(|part| part.replace('\u{1f}', ""))
            .collect();
        uuid::Uuid::new_v5(self, joined.join("\u{1f}").as_bytes())
    }
}

/// Ingest's own checks, run here so that one bad row does not refuse its
/// whole batch.
fn check(event: &Value) -> Result<(), String> {
    let mut errors = Vec::new();
    let mut parsed = rapport_ingest::validate::event_from_json(0, event, &mut errors);
    rapport_ingest::validate::check_event(0, &mut parsed, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors
            .iter()
            .map(|error| format!("{}: {}", error.field, error.message))
            .collect::<Vec<_>>()
            .join("; "))
    }
}

/// A row of the file: the line it starts on, and its fields.
#[derive(Debug, Clone)]
struct SourceRow {
    line: u64,
    record: csv::StringRecord,
}

/// What a unit of the file (one row, or one invoice's lines) comes to.
#[derive(Debug)]
enum Outcome {
    /// Events to send (none for, say, a cancellation of free items).
    Events(Vec<Value>),
    /// Refused: one reason per row.
    Refused(Vec<String>),
}

#[derive(Debug)]
struct Unit {
    rows: Vec<SourceRow>,
    outcome: Outcome,
}

impl Unit {
    fn refused(rows: Vec<SourceRow>, reason: String) -> Unit {
        let reasons = vec![reason; rows.len()];
        Unit {
            rows,
            outcome: Outcome::Refused(reasons),
        }
    }

    fn last_line(&self) -> u64 {
        self.rows.last().map_or(0, |row| row.line)
    }
}

/// One line item, read.
#[derive(Debug)]
struct Item {
    sku: String,
    quantity: i64,
    unit_price_minor: i64,
}

/// An order of an order-lines file, kept to match later cancellations
/// against: each stock code with the units not yet cancelled.
#[derive(Debug)]
struct Purchase {
    order_id: String,
    at_ms: i64,
    currency: String,
    remaining: Vec<(String, i64)>,
}

/// Groups the lines of an order-lines file into orders, one invoice at a
/// time, and turns cancellations into refunds of the orders they return
/// items of. Pure: rows in, units out.
#[derive(Debug, Default)]
struct OrderLines {
    /// Each invoice's first line and number of lines in the whole file,
    /// from a first pass: how lines that are not consecutive are found.
    layout: HashMap<String, (u64, usize)>,
    open: Vec<SourceRow>,
    /// Orders by customer (their identifiers as JSON), in file order.
    purchases: HashMap<String, Vec<Purchase>>,
}

impl OrderLines {
    /// First pass: notes where invoice `order_id` has a line.
    fn survey(&mut self, order_id: &str, line: u64) {
        if !order_id.is_empty() {
            self.layout
                .entry(order_id.to_owned())
                .or_insert((line, 0))
                .1 += 1;
        }
    }

    /// Second pass: takes the next row; gives back the units it closed.
    fn push(&mut self, row: SourceRow, reading: &Reading<'_>) -> Vec<Unit> {
        let columns = reading.columns;
        let order_id = columns.get(&row.record, "order_id");
        let mut closed = Vec::new();
        let continues = self
            .open
            .first()
            .is_some_and(|first| columns.get(&first.record, "order_id") == order_id);
        if !continues && let Some(unit) = self.finish(reading) {
            closed.push(unit);
        }
        if order_id.is_empty() {
            closed.push(Unit::refused(vec![row], "order_id is empty".to_owned()));
        } else {
            self.open.push(row);
        }
        closed
    }

    /// Closes the invoice being read, at the end of the file or of its lines.
    fn finish(&mut self, reading: &Reading<'_>) -> Option<Unit> {
        if self.open.is_empty() {
            return None;
        }
        let rows = std::mem::take(&mut self.open);
        Some(self.invoice(rows, reading))
    }

    /// One invoice's lines as one unit: an order, a cancellation, or all
    /// its lines refused, never some of them.
    fn invoice(&mut self, rows: Vec<SourceRow>, reading: &Reading<'_>) -> Unit {
        let columns = reading.columns;
        let order_id = columns.get(&rows[0].record, "order_id").to_owned();
        let (first_line, last_line) = (rows[0].line, rows[rows.len() - 1].line);
        if let Some(&(first_in_file, count)) = self.layout.get(&order_id)
            && count != rows.len()
        {
            let elsewhere = if first_in_file == first_line {
                "more lines further on".to_owned()
            } else {
                format!("a line on line {first_in_file}")
            };
            return Unit::refused(
                rows,
                format!(
                    "invoice {order_id}'s lines are not consecutive: it has {count} lines in the file, \
                     {} of them here (lines {first_line}-{last_line}) and {elsewhere}",
                    last_line - first_line + 1,
                ),
            );
        }
        // Whose, when and in what currency: one answer for every line.
        let customers: Vec<Map<String, Value>> = rows
            .iter()
            .map(|row| columns.customer(&row.record))
            .collect();
        if customers.iter().all(Map::is_empty) {
            return Unit::refused(
                rows,
                "no customer: customer_id, email and phone are empty, so nothing says whose the line is"
                    .to_owned(),
            );
        }
        if let Some(other) = customers
            .iter()
            .position(|customer| *customer != customers[0])
        {
            // The values stay out of the reason: they may be personal.
            let other_line = rows[other].line;
            let reason = match (customers[0].is_empty(), customers[other].is_empty()) {
                (true, _) => format!(
                    "invoice {order_id}'s lines disagree on the customer: line {first_line} names none, \
                     line {other_line} names one"
                ),
                (_, true) => format!(
                    "invoice {order_id}'s lines disagree on the customer: line {first_line} names one, \
                     line {other_line} names none"
                ),
                _ => format!(
                    "invoice {order_id}'s lines disagree on the customer: lines {first_line} and \
                     {other_line} name different ones"
                ),
            };
            return Unit::refused(rows, reason);
        }
        let dates: Vec<&str> = rows
            .iter()
            .map(|row| columns.get(&row.record, "occurred_at"))
            .collect();
        if let Some(other) = dates.iter().position(|date| *date != dates[0]) {
            let reason = format!(
                "invoice {order_id}'s lines have different dates (line {first_line}: {:?}, line {}: {:?})",
                dates[0], rows[other].line, dates[other]
            );
            return Unit::refused(rows, reason);
        }
        let occurred_at = match timestamp(dates[0], reading.dates) {
            Ok(occurred_at) => occurred_at,
            Err(reason) => return Unit::refused(rows, reason),
        };
        let currencies: Vec<Result<String, String>> = rows
            .iter()
            .map(|row| reading.currency(&row.record))
            .collect();
        let currency = match &currencies[0] {
            Ok(currency) => currency.clone(),
            Err(reason) => return Unit::refused(rows, reason.clone()),
        };
        if let Some(other) = currencies
            .iter()
            .position(|other| other.as_ref() != Ok(&currency))
        {
            let reason = format!(
                "invoice {order_id}'s lines have different currencies (line {first_line} and line {})",
                rows[other].line
            );
            return Unit::refused(rows, reason);
        }
        // The items, each line checked on its own.
        let mut items = Vec::with_capacity(rows.len());
        let mut reasons: Vec<Option<String>> = Vec::with_capacity(rows.len());
        for row in &rows {
            match item(columns, row, &currency) {
                Ok(item) => {
                    items.push(item);
                    reasons.push(None);
                }
                Err(reason) => reasons.push(Some(reason)),
            }
        }
        if reasons.iter().any(Option::is_some) {
            return refused_whole(&order_id, rows, reasons);
        }
        let cancellation = order_id.starts_with('C');
        let negative = items.iter().filter(|item| item.quantity < 0).count();
        if cancellation && negative == items.len() {
            let customer = customers.into_iter().next().unwrap_or_default();
            let invoice = Invoice {
                order_id: &order_id,
                occurred_at: &occurred_at,
                customer: &customer,
                currency: &currency,
            };
            return self.cancellation(&invoice, rows, &items, reading);
        }
        if negative > 0 {
            let reasons = items
                .iter()
                .map(|item| {
                    (item.quantity < 1).then(|| {
                        if cancellation {
                            format!(
                                "quantity {}: a cancellation (invoice C…) has only negative quantities",
                                item.quantity
                            )
                        } else {
                            format!(
                                "quantity {} must be at least 1: only a cancellation (an invoice number \
                                 starting with C) has negative quantities",
                                item.quantity
                            )
                        }
                    })
                })
                .collect();
            return refused_whole(&order_id, rows, reasons);
        }
        let total = items.iter().try_fold(0_i64, |total, item| {
            item.quantity
                .checked_mul(item.unit_price_minor)
                .and_then(|amount| total.checked_add(amount))
        });
        let Some(total_minor) = total else {
            return Unit::refused(rows, format!("invoice {order_id}'s total is too large"));
        };
        let customer = &customers[0];
        let mut event = reading.event(
            "order.placed",
            NAMESPACE.new_v5_parts(&["order.placed", &order_id]),
            &occurred_at,
            customer,
            json!({
                "order_id": order_id,
                "total_minor": total_minor,
                "currency": currency,
                "items": items.iter().map(|item| json!({
                    "sku": item.sku,
                    "quantity": item.quantity,
                    "unit_price_minor": item.unit_price_minor,
                })).collect::<Vec<_>>(),
            }),
        );
        // No projection reads the items: an invoice too long for one event
        // keeps its total and drops them.
        if encoded_len(&event) > MAX_EVENT_BYTES
            && let Some(data) = event["data"].as_object_mut()
        {
            data.remove("items");
        }
        if let Err(reason) = check(&event) {
            return Unit::refused(rows, reason);
        }
        let mut remaining: Vec<(String, i64)> = Vec::new();
        for item in &items {
            match remaining.iter_mut().find(|(sku, _)| *sku == item.sku) {
                Some((_, quantity)) => *quantity += item.quantity,
                None => remaining.push((item.sku.clone(), item.quantity)),
            }
        }
        self.purchases
            .entry(customer_key(customer))
            .or_default()
            .push(Purchase {
                order_id,
                at_ms: epoch_ms(&occurred_at),
                currency,
                remaining,
            });
        Unit {
            rows,
            outcome: Outcome::Events(vec![event]),
        }
    }

    /// A cancellation invoice: each line returns units of a stock code the
    /// customer bought in an earlier invoice of the file (the latest one
    /// first), and becomes a refund of that order, which the customer view
    /// subtracts from its total. An order whose every unit came back is
    /// cancelled as well. A cancellation names no order; one of items the
    /// file has no purchase of (bought before the file's first day, a
    /// discount line) is refused whole, since a refund of an order the
    /// view never saw placed changes no figure.
    fn cancellation(
        &mut self,
        invoice: &Invoice<'_>,
        rows: Vec<SourceRow>,
        items: &[Item],
        reading: &Reading<'_>,
    ) -> Unit {
        let at_ms = epoch_ms(invoice.occurred_at);
        let mut purchases = self
            .purchases
            .remove(&customer_key(invoice.customer))
            .unwrap_or_default();
        // Units taken, by (purchase, stock code); amounts by purchase.
        let mut taken: BTreeMap<(usize, usize), i64> = BTreeMap::new();
        let mut refunds: BTreeMap<usize, i64> = BTreeMap::new();
        let mut reasons: Vec<Option<String>> = Vec::with_capacity(items.len());
        for item in items {
            let wanted = -item.quantity;
            let mut missing = wanted;
            'purchases: for (index, purchase) in purchases.iter().enumerate().rev() {
                if purchase.at_ms > at_ms || purchase.currency != invoice.currency {
                    continue;
                }
                for (position, (sku, remaining)) in purchase.remaining.iter().enumerate() {
                    if *sku != item.sku {
                        continue;
                    }
                    let already = taken.get(&(index, position)).copied().unwrap_or(0);
                    let take = (remaining - already).min(missing);
                    if take <= 0 {
                        continue;
                    }
                    *taken.entry((index, position)).or_default() += take;
                    let amount = take.checked_mul(item.unit_price_minor).unwrap_or(i64::MAX);
                    let refund = refunds.entry(index).or_default();
                    *refund = refund.saturating_add(amount);
                    missing -= take;
                    if missing == 0 {
                        break 'purchases;
                    }
                }
            }
            reasons.push((missing > 0).then(|| {
                format!(
                    "cancels {wanted} of stock code {}, but the customer's earlier invoices in the file \
                     have {} of it not yet cancelled: a refund of an order the file does not hold would \
                     change no figure",
                    item.sku,
                    wanted - missing,
                )
            }));
        }
        let unit = if reasons.iter().any(Option::is_some) {
            refused_whole(invoice.order_id, rows, reasons)
        } else {
            for ((index, position), units) in &taken {
                purchases[*index].remaining[*position].1 -= units;
            }
            let mut events = Vec::new();
            for (index, amount) in &refunds {
                let original = &purchases[*index].order_id;
                if *amount > 0 {
                    events.push(reading.event(
                        "order.refunded",
                        NAMESPACE.new_v5_parts(&["order.refunded", invoice.order_id, original]),
                        invoice.occurred_at,
                        invoice.customer,
                        json!({"order_id": original, "amount_minor": amount}),
                    ));
                }
                if purchases[*index]
                    .remaining
                    .iter()
                    .all(|(_, remaining)| *remaining == 0)
                {
                    events.push(reading.event(
                        "order.cancelled",
                        NAMESPACE.new_v5_parts(&["order.cancelled", original]),
                        invoice.occurred_at,
                        invoice.customer,
                        json!({"order_id": original}),
                    ));
                }
            }
            match events.iter().find_map(|event| check(event).err()) {
                Some(reason) => Unit::refused(rows, reason),
                None => Unit {
                    rows,
                    outcome: Outcome::Events(events),
                },
            }
        };
        if !purchases.is_empty() {
            self.purchases
                .insert(customer_key(invoice.customer), purchases);
        }
        unit
    }
}

/// What a cancellation invoice is, beside its lines.
struct Invoice<'a> {
    order_id: &'a str,
    occurred_at: &'a str,
    customer: &'a Map<String, Value>,
    currency: &'a str,
}

/// One line's item, or why it is not one.
fn item(columns: &Columns, row: &SourceRow, currency: &str) -> Result<Item, String> {
    let record = &row.record;
    let sku = columns.get(record, "sku");
    if sku.is_empty() {
        return Err("sku (stock code) is empty".to_owned());
    }
    let text = columns.get(record, "quantity");
    let quantity = text
        .parse::<i64>()
        .map_err(|_| format!("quantity {text:?} is not a whole number"))?;
    let unit_price_minor = match columns.get(record, "unit_price_minor") {
        "" => decimal_to_minor(
            columns.get(record, "unit_price"),
            currency,
            ExtraDecimals::Refuse,
        )
        .map_err(|reason| format!("unit_price {reason}"))?,
        text => text
            .parse::<i64>()
            .map_err(|_| format!("unit_price_minor {text:?} is not a whole number"))?,
    };
    if unit_price_minor < 0 {
        return Err(format!(
            "unit price {} must not be negative",
            columns.get(record, "unit_price")
        ));
    }
    Ok(Item {
        sku: sku.to_owned(),
        quantity,
        unit_price_minor,
    })
}

/// Every line of an invoice refused: those with a reason of their own
/// with it, the others with the first of them.
fn refused_whole(order_id: &str, rows: Vec<SourceRow>, reasons: Vec<Option<String>>) -> Unit {
    let (first_line, first_reason) = rows
        .iter()
        .zip(&reasons)
        .find_map(|(row, reason)| Some((row.line, reason.clone()?)))
        .unwrap_or_default();
    let reasons = reasons
        .into_iter()
        .map(|reason| {
            reason.unwrap_or_else(|| {
                format!("invoice {order_id} is refused whole: line {first_line}: {first_reason}")
            })
        })
        .collect();
    Unit {
        rows,
        outcome: Outcome::Refused(reasons),
    }
}

/// Identifies a customer's purchases: their identifiers, as JSON.
fn customer_key(customer: &Map<String, Value>) -> String {
    Value::Object(customer.clone()).to_string()
}

fn encoded_len(event: &Value) -> usize {
    serde_json::to_vec(event).map_or(usize::MAX, |bytes| bytes.len())
}

/// The rejects file, made at the first refused row: `line`, `reason`, then
/// the row's own columns under their own headers, so it can be fixed and
/// imported again once the first two columns are cut.
struct Rejects {
    path: PathBuf,
    headers: csv::StringRecord,
    file: Option<csv::Writer<File>>,
}

impl Rejects {
    /// Resuming after `through_line`: keeps the file's rows of lines up to
    /// there (written before the checkpoint was), drops the later ones
    /// (they are read and refused again) and appends from there on.
    /// Gives back how many rows it kept.
    fn resume(&mut self, through_line: u64) -> anyhow::Result<u64> {
        if !self.path.exists() {
            return Ok(0);
        }
        let context = || format!("reading {}", self.path.display());
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_path(&self.path)
            .with_context(context)?;
        let temporary = sibling(&self.path, ".tmp");
        let mut writer = csv::WriterBuilder::new()
            .flexible(true)
            .from_path(&temporary)
            .with_context(|| format!("creating {}", temporary.display()))?;
        writer.write_record(reader.headers().with_context(context)?)?;
        let mut kept = 0;
        for record in reader.records() {
            let record = record.with_context(context)?;
            let line = record.get(0).and_then(|line| line.parse::<u64>().ok());
            if line.is_some_and(|line| line <= through_line) {
                writer.write_record(&record)?;
                kept += 1;
            }
        }
        writer.flush()?;
        drop(writer);
        std::fs::rename(&temporary, &self.path)
            .with_context(|| format!("replacing {}", self.path.display()))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        self.file = Some(csv::WriterBuilder::new().flexible(true).from_writer(file));
        Ok(kept)
    }

    fn add(&mut self, line: u64, reason: &str, record: &csv::StringRecord) -> anyhow::Result<()> {
        if self.file.is_none() {
            let mut writer = csv::WriterBuilder::new()
                .flexible(true)
                .from_path(&self.path)
                .with_context(|| format!("creating {}", self.path.display()))?;
            writer.write_record(["line", "reason"].into_iter().chain(self.headers.iter()))?;
            self.file = Some(writer);
        }
        let writer = self.file.as_mut().expect("just made");
        let line = line.to_string();
        writer.write_record([line.as_str(), reason].into_iter().chain(record.iter()))?;
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if let Some(writer) = self.file.as_mut() {
            writer.flush()?;
        }
        Ok(())
    }
}

/// The checkpoint beside the file: how far the import got, and what the
/// file and the settings were, so that `--resume` continues the same
/// import of the same file and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Checkpoint {
    file_bytes: u64,
    /// UUID v5 of the file's first and last 64 KiB.
    fingerprint: String,
    /// The options that shape events, as a line of text.
    settings: String,
    rejects: PathBuf,
    /// Every row starting on this line or before was acknowledged by
    /// ingest or written to the rejects file.
    through_line: u64,
    finished: bool,
}

impl Checkpoint {
    fn load(path: &Path) -> anyhow::Result<Option<Checkpoint>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("reading the checkpoint {}", path.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Written whole or not at all: a temporary file, synced, renamed.
    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let temporary = sibling(path, ".tmp");
        let mut file = File::create(&temporary)
            .with_context(|| format!("creating {}", temporary.display()))?;
        file.write_all(&serde_json::to_vec_pretty(self)?)?;
        file.sync_data()?;
        drop(file);
        std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))
    }
}

/// `path` with `suffix` after its whole name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// `orders.csv` → `orders.csv.import-state`, beside it.
pub(crate) fn checkpoint_beside(file: &Path) -> PathBuf {
    sibling(file, ".import-state")
}

/// The file's size and a hash of its first and last 64 KiB: cheap, and
/// different for a file that was edited, cut or appended to.
fn fingerprint(path: &Path) -> anyhow::Result<(u64, String)> {
    const SPAN: u64 = 64 * 1024;
    let context = || format!("reading {}", path.display());
    let mut file = File::open(path).with_context(context)?;
    let size = file.metadata().with_context(context)?.len();
    let mut bytes = Vec::with_capacity(2 * SPAN as usize);
    (&mut file)
        .take(SPAN)
        .read_to_end(&mut bytes)
        .with_context(context)?;
    if size > SPAN {
        file.seek(SeekFrom::Start(size.saturating_sub(SPAN).max(SPAN)))
            .with_context(context)?;
        file.take(SPAN)
            .read_to_end(&mut bytes)
            .with_context(context)?;
    }
    bytes.extend_from_slice(&size.to_le_bytes());
    Ok((size, uuid::Uuid::new_v5(&NAMESPACE, &bytes).to_string()))
}

/// Sends one batch, retrying while ingest is busy; gives back the events
/// ingest refused with its reason (none unless its rules differ from ours).
fn send(
    agent: &ureq::Agent,
    url: &str,
    authorization: Option<&str>,
    events: &[&Value],
) -> anyhow::Result<Vec<(usize, String)>> {
    let body = json!({ "events": events });
    for attempt in 0..=RETRIES {
        let mut request = agent.post(url).header("content-type", "application/json");
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let mut response = request
            .send_json(&body)
            .with_context(|| format!("POST {url}"))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(1);
        let answer: Value = response.body_mut().read_json().unwrap_or(Value::Null);
        match status {
            200..=299 => return Ok(Vec::new()),
            400 => {
                let refused: Vec<(usize, String)> = answer["details"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|detail| {
                        let index = detail["index"].as_u64()? as usize;
                        let reason = format!(
                            "{}: {}",
                            detail["field"].as_str().unwrap_or(""),
                            detail["message"].as_str().unwrap_or("")
                        );
                        Some((index, reason))
                    })
                    .collect();
                if refused.is_empty() {
                    bail!("ingest refused a batch: {answer}");
                }
                return Ok(refused);
            }
            401 | 403 => bail!(
                "ingest refused the key ({status}): {}; give a write or admin key with --key or RAPPORT_KEY",
                answer["error"].as_str().unwrap_or("")
            ),
            429 | 503 if attempt < RETRIES => {
                std::thread::sleep(Duration::from_secs(retry_after.clamp(1, 30)));
            }
            _ => bail!("ingest answered {status}: {answer}"),
        }
    }
    bail!("ingest stayed busy through {RETRIES} retries")
}

/// An event on its way, with the rows it stands for (for the rejects file,
/// should ingest refuse it).
struct Outgoing {
    event: Value,
    rows: std::sync::Arc<[SourceRow]>,
}

/// Events sent in one request. Once it and every batch before it are
/// acknowledged, every row up to `through_line` is done.
struct Batch {
    sequence: u64,
    through_line: u64,
    events: Vec<Outgoing>,
}

/// What sending one batch came to: its sequence number, the events sent,
/// and the rows whose event ingest refused, with its reason.
type Delivered = anyhow::Result<(u64, u64, Vec<(SourceRow, String)>)>;

/// Sends a batch; events ingest refuses are set aside and the rest sent again.
fn deliver(agent: &ureq::Agent, url: &str, authorization: Option<&str>, batch: Batch) -> Delivered {
    let events: Vec<&Value> = batch
        .events
        .iter()
        .map(|outgoing| &outgoing.event)
        .collect();
    let refused = send(agent, url, authorization, &events)?;
    if refused.is_empty() {
        return Ok((batch.sequence, batch.events.len() as u64, Vec::new()));
    }
    let refused_events: HashSet<usize> = refused.iter().map(|(index, _)| *index).collect();
    let rest: Vec<&Value> = events
        .iter()
        .enumerate()
        .filter(|(index, _)| !refused_events.contains(index))
        .map(|(_, event)| *event)
        .collect();
    if !rest.is_empty() && !send(agent, url, authorization, &rest)?.is_empty() {
        bail!("ingest refused events it had accepted a moment before");
    }
    let set_aside = refused
        .into_iter()
        .filter_map(|(index, reason)| Some((batch.events.get(index)?, reason)))
        .flat_map(|(outgoing, reason)| {
            outgoing
                .rows
                .iter()
                .map(move |row| (row.clone(), reason.clone()))
        })
        .collect();
    Ok((batch.sequence, rest.len() as u64, set_aside))
}

/// Batches in flight and how far the acknowledged ones reach: the line
/// below which every batch was acknowledged, whatever order they came back in.
#[derive(Debug, Default)]
struct Acknowledgements {
    /// The lowest sequence number not yet acknowledged.
    next: u64,
    /// Batches sent: their `through_line`, and whether acknowledged.
    pending: BTreeMap<u64, (u64, bool)>,
}

impl Acknowledgements {
    fn sent(&mut self, sequence: u64, through_line: u64) {
        self.pending.insert(sequence, (through_line, false));
    }

    /// Notes batch `sequence` acknowledged; gives the new checkpoint line
    /// if that moved it.
    fn acknowledged(&mut self, sequence: u64) -> Option<u64> {
        if let Some((_, done)) = self.pending.get_mut(&sequence) {
            *done = true;
        }
        let mut reached = None;
        while let Some(&(through_line, true)) = self.pending.get(&self.next) {
            self.pending.remove(&self.next);
            self.next += 1;
            reached = Some(through_line);
        }
        reached
    }
}

/// Cuts the events into batches of at most `size` events and
/// [`BODY_BUDGET`] bytes, noting for each how far the file is done once it
/// is acknowledged.
struct Batcher {
    size: usize,
    current: Vec<Outgoing>,
    bytes: usize,
    next_sequence: u64,
    /// The last line of the last unit handled whole: written to the
    /// rejects file, or every event of it in a batch.
    handled_through: u64,
}

impl Batcher {
    /// Adds a unit's events; gives back the batches that filled up.
    fn add(&mut self, events: Vec<Value>, rows: &[SourceRow], last_line: u64) -> Vec<Batch> {
        let rows: std::sync::Arc<[SourceRow]> = rows.into();
        let mut full = Vec::new();
        for event in events {
            let bytes = encoded_len(&event) + 1;
            if !self.current.is_empty()
                && (self.current.len() >= self.size || self.bytes + bytes > BODY_BUDGET)
            {
                full.push(self.cut());
            }
            self.bytes += bytes;
            self.current.push(Outgoing {
                event,
                rows: rows.clone(),
            });
        }
        self.handled_through = last_line;
        if self.current.len() >= self.size {
            full.push(self.cut());
        }
        full
    }

    /// A unit with nothing to send (refused, or no events) is done once
    /// what came before it is.
    fn handled(&mut self, last_line: u64) {
        self.handled_through = last_line;
    }

    fn cut(&mut self) -> Batch {
        let batch = Batch {
            sequence: self.next_sequence,
            through_line: self.handled_through,
            events: std::mem::take(&mut self.current),
        };
        self.next_sequence += 1;
        self.bytes = 0;
        batch
    }

    fn rest(&mut self) -> Option<Batch> {
        (!self.current.is_empty()).then(|| self.cut())
    }
}

/// One pass over the file before anything is sent: what its slash dates
/// say about their order, and (order lines) where each invoice's lines are.
fn survey(
    path: &Path,
    columns: &Columns,
    order_lines: &mut OrderLines,
    kind: Kind,
) -> anyhow::Result<SlashDates> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut record = csv::StringRecord::new();
    let mut slash_dates = SlashDates::default();
    while reader
        .read_record(&mut record)
        .with_context(|| format!("reading {}", path.display()))?
    {
        let line = record.position().map_or(0, |position| position.line());
        slash_dates.observe(line, columns.get(&record, "occurred_at"));
        if kind == Kind::OrderLines {
            order_lines.survey(columns.get(&record, "order_id"), line);
        }
    }
    Ok(slash_dates)
}

/// Reads, checks and sends every row of the file.
pub(crate) fn run(options: &Options) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let (size, file_fingerprint) = fingerprint(&options.file)?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(&options.file)
        .with_context(|| format!("opening {}", options.file.display()))?;
    let headers = reader.headers()?.clone();
    let columns = Columns::find(&headers, options.kind)?;
    if options.kind != Kind::Customers && !columns.has("currency") && options.currency.is_none() {
        bail!(
            "the file has no `currency` column: give the currency of its amounts with --currency"
        );
    }
    let mut order_lines = OrderLines::default();
    let slash_dates = survey(&options.file, &columns, &mut order_lines, options.kind)?;
    let date_order = slash_dates.settle(options.date_order)?;
    if options.date_order.is_none()
        && let Some(order) = date_order
    {
        let (line, text) = match order {
            DateOrder::MonthFirst => slash_dates.month_first.clone(),
            DateOrder::DayFirst => slash_dates.day_first.clone(),
        }
        .unwrap_or_default();
        println!(
            "dates with slashes are read as {}: {text:?} on line {line} can be nothing else",
            order.shape()
        );
    }
    let reading = Reading {
        columns: &columns,
        currency: options.currency.as_deref(),
        channel: options.channel.as_deref(),
        dates: Dates {
            order: date_order,
            offset_minutes: options.utc_offset_minutes,
        },
    };
    let rejects_path = options
        .rejects
        .clone()
        .unwrap_or_else(|| rejects_beside(&options.file));
    let mut rejects = Rejects {
        path: rejects_path.clone(),
        headers: headers.clone(),
        file: None,
    };

    // The checkpoint: where to resume, and where progress is recorded.
    let checkpoint_path = checkpoint_beside(&options.file);
    let settings = format!(
        "{} currency={} channel={} date-order={} utc-offset={}",
        options.kind.name(),
        options.currency.as_deref().unwrap_or("-"),
        options.channel.as_deref().unwrap_or("-"),
        date_order.map_or("-", DateOrder::name),
        offset_text(options.utc_offset_minutes),
    );
    let mut checkpoint = Checkpoint {
        file_bytes: size,
        fingerprint: file_fingerprint,
        settings,
        // Absolute, so that resuming from another directory finds it the same.
        rejects: std::path::absolute(&rejects_path).unwrap_or_else(|_| rejects_path.clone()),
        through_line: 0,
        finished: false,
    };
    let mut resume_after = 0;
    if options.resume {
        match Checkpoint::load(&checkpoint_path)? {
            None => println!(
                "no checkpoint at {}: starting from the first row",
                checkpoint_path.display()
            ),
            Some(saved) => {
                if (saved.file_bytes, &saved.fingerprint)
                    != (checkpoint.file_bytes, &checkpoint.fingerprint)
                {
                    bail!(
                        "{} changed since the checkpoint {} was written (it had {} bytes, now {}): \
                         resuming would skip rows that may not have been sent; import it without --resume",
                        options.file.display(),
                        checkpoint_path.display(),
                        saved.file_bytes,
                        checkpoint.file_bytes,
                    );
                }
                if saved.settings != checkpoint.settings {
                    bail!(
                        "the checkpoint {} is of an import with other settings ({}) than this one ({}): \
                         resume with the same settings, or import without --resume",
                        checkpoint_path.display(),
                        saved.settings,
                        checkpoint.settings,
                    );
                }
                if saved.rejects != checkpoint.rejects {
                    bail!(
                        "the checkpoint {} wrote refused rows to {}, this import would write them to {}: \
                         resume with --rejects {}",
                        checkpoint_path.display(),
                        saved.rejects.display(),
                        checkpoint.rejects.display(),
                        saved.rejects.display(),
                    );
                }
                if saved.finished {
                    println!(
                        "the import of {} finished already (checkpoint {}); nothing to resume. \
                         Import it without --resume to send it again.",
                        options.file.display(),
                        checkpoint_path.display()
                    );
                    return Ok(Summary::default());
                }
                resume_after = saved.through_line;
                checkpoint.through_line = resume_after;
            }
        }
    } else if checkpoint_path.exists() {
        // A checkpoint of an earlier import would not match the rejects
        // file this run writes: it starts over.
        std::fs::remove_file(&checkpoint_path)
            .with_context(|| format!("removing {}", checkpoint_path.display()))?;
    }
    if resume_after == 0 && rejects_path.exists() {
        // Left by an earlier import: this one writes its own.
        std::fs::remove_file(&rejects_path)
            .with_context(|| format!("removing {}", rejects_path.display()))?;
    }
    if resume_after > 0 {
        let kept = rejects.resume(resume_after)?;
        println!(
            "resuming after line {resume_after} of {}: every row up to there was acknowledged by \
             ingest or refused ({kept} refused, kept in {})",
            options.file.display(),
            rejects_path.display()
        );
    }

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let url = format!("{}/v1/events", options.ingest_url.trim_end_matches('/'));
    let authorization = options
        .key
        .as_deref()
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .map(|key| format!("Bearer {key}"));
    if !options.dry_run && authorization.is_none() {
        bail!("importing needs a write or admin key: give --key or RAPPORT_KEY");
    }
    let progress = Progress::bar("import");
    let mut summary = Summary::default();
    // Event ids seen, as their 128 bits: 24 bytes a row rather than a string.
    let mut seen: HashMap<u128, u64> = HashMap::new();
    let mut batcher = Batcher {
        size: options.batch.max(1),
        current: Vec::new(),
        bytes: 0,
        next_sequence: 0,
        handled_through: resume_after,
    };
    let mut acknowledgements = Acknowledgements::default();
    let mut record = csv::StringRecord::new();
    let senders = if options.dry_run {
        0
    } else {
        options.parallel.max(1)
    };
    let record_progress = !options.dry_run;
    // Batches go to `senders` threads, each with one request in flight;
    // what they came to comes back here, where the rejects and the
    // checkpoint are written.
    let (batch_sender, batch_receiver) = std::sync::mpsc::sync_channel::<Batch>(senders);
    let batch_receiver = std::sync::Mutex::new(batch_receiver);
    let (outcome_sender, outcomes) = std::sync::mpsc::channel::<Delivered>();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        // Dropped when this returns, early or not: the senders then stop.
        let batch_sender = batch_sender;
        for _ in 0..senders {
            let (batches, outcome_sender) = (&batch_receiver, outcome_sender.clone());
            let (agent, url, authorization) = (&agent, &url, authorization.as_deref());
            scope.spawn(move || {
                loop {
                    let next = batches.lock().expect("batch queue").recv();
                    let Ok(batch) = next else { break };
                    if outcome_sender
                        .send(deliver(agent, url, authorization, batch))
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
        drop(outcome_sender);
        // What a batch came to: its refused rows into the rejects file,
        // then (those on disk first) the checkpoint moved on.
        let absorb = |outcome: Delivered,
                      summary: &mut Summary,
                      rejects: &mut Rejects,
                      acknowledgements: &mut Acknowledgements,
                      checkpoint: &mut Checkpoint| {
            let (sequence, sent, refused) = outcome?;
            summary.sent += sent;
            for (row, reason) in refused {
                rejects.add(row.line, &reason, &row.record)?;
                summary.refused += 1;
            }
            if let Some(through_line) = acknowledgements.acknowledged(sequence) {
                rejects.flush()?;
                checkpoint.through_line = through_line;
                checkpoint.save(&checkpoint_path)?;
            }
            anyhow::Ok(())
        };
        let dispatch =
            |batch: Batch, summary: &mut Summary, acknowledgements: &mut Acknowledgements| {
                if options.dry_run {
                    summary.sent += batch.events.len() as u64;
                } else {
                    acknowledgements.sent(batch.sequence, batch.through_line);
                    batch_sender
                        .send(batch)
                        .map_err(|_| anyhow::anyhow!("the senders stopped"))?;
                }
                anyhow::Ok(())
            };
        let (mut more, mut dispatched) = (true, false);
        while more {
            more = reader.read_record(&mut record)?;
            let mut units = Vec::new();
            if more {
                let row = SourceRow {
                    line: record.position().map_or(0, |position| position.line()),
                    record: record.clone(),
                };
                match options.kind {
                    Kind::OrderLines => units.extend(order_lines.push(row, &reading)),
                    kind => {
                        let outcome = match event_of(kind, &reading, &row.record)
                            .and_then(|event| check(&event).map(|()| event))
                        {
                            Ok(event) => Outcome::Events(vec![event]),
                            Err(reason) => Outcome::Refused(vec![reason]),
                        };
                        units.push(Unit {
                            rows: vec![row],
                            outcome,
                        });
                    }
                }
            } else {
                units.extend(order_lines.finish(&reading));
            }
            for mut unit in units {
                let last_line = unit.last_line();
                let done_before = last_line <= resume_after;
                // A later event repeating an earlier one's id (an order id
                // again) refuses its rows.
                if let Outcome::Events(events) = &unit.outcome {
                    let ids: Vec<u128> = events
                        .iter()
                        .filter_map(|event| event["event_id"].as_str())
                        .filter_map(|id| uuid::Uuid::parse_str(id).ok())
                        .map(|id| id.as_u128())
                        .collect();
                    if let Some(first) = ids.iter().find_map(|id| seen.get(id)) {
                        let reason = format!("repeats the row on line {first}");
                        unit = Unit::refused(unit.rows, reason);
                    } else {
                        for id in ids {
                            seen.insert(id, unit.rows[0].line);
                        }
                    }
                }
                if done_before {
                    continue;
                }
                summary.rows += unit.rows.len() as u64;
                match unit.outcome {
                    Outcome::Refused(reasons) => {
                        for (row, reason) in unit.rows.iter().zip(&reasons) {
                            rejects.add(row.line, reason, &row.record)?;
                            summary.refused += 1;
                        }
                        batcher.handled(last_line);
                    }
                    Outcome::Events(events) if events.is_empty() => batcher.handled(last_line),
                    Outcome::Events(events) => {
                        for batch in batcher.add(events, &unit.rows, last_line) {
                            dispatch(batch, &mut summary, &mut acknowledgements)?;
                            dispatched = true;
                        }
                    }
                }
            }
            if !more && let Some(batch) = batcher.rest() {
                dispatch(batch, &mut summary, &mut acknowledgements)?;
            }
            if dispatched {
                dispatched = false;
                while let Ok(outcome) = outcomes.try_recv() {
                    absorb(
                        outcome,
                        &mut summary,
                        &mut rejects,
                        &mut acknowledgements,
                        &mut checkpoint,
                    )?;
                }
                progress.show(
                    reader.position().byte(),
                    size,
                    format!("{} rows, {} refused", summary.rows, summary.refused),
                );
            }
        }
        drop(batch_sender);
        for outcome in outcomes {
            absorb(
                outcome,
                &mut summary,
                &mut rejects,
                &mut acknowledgements,
                &mut checkpoint,
            )?;
        }
        Ok(())
    })?;
    rejects.flush()?;
    if record_progress {
        checkpoint.through_line = batcher.handled_through;
        checkpoint.finished = true;
        checkpoint.save(&checkpoint_path)?;
    }
    drop(progress);
    let elapsed = started.elapsed().as_secs_f64().max(0.001);
    println!(
        "{} {} rows of {}{} in {elapsed:.1} s ({:.0} rows/s): {} {}, {} refused",
        if options.dry_run {
            "checked"
        } else {
            "imported"
        },
        summary.rows,
        options.file.display(),
        if resume_after > 0 {
            format!(" after line {resume_after}")
        } else {
            String::new()
        },
        summary.rows as f64 / elapsed,
        summary.sent,
        if options.dry_run {
            "would be sent"
        } else {
            "events sent"
        },
        summary.refused,
    );
    if summary.refused > 0 || resume_after > 0 && rejects_path.exists() {
        println!(
            "refused rows, with their line and reason: {}",
            rejects_path.display()
        );
    }
    Ok(summary)
}

/// `orders.csv` → `orders.rejects.csv`, beside it.
fn rejects_beside(file: &Path) -> PathBuf {
    let stem = file.file_stem().map_or_else(
        || "import".into(),
        |stem| stem.to_string_lossy().into_owned(),
    );
    file.with_file_name(format!("{stem}.rejects.csv"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UTC: Dates = Dates {
        order: None,
        offset_minutes: 0,
    };
    const MONTH_FIRST: Dates = Dates {
        order: Some(DateOrder::MonthFirst),
        offset_minutes: 0,
    };

    #[test]
    fn amounts_follow_their_currency_minor_unit() {
        assert_eq!(minor_units("12.34", "USD"), Ok(1234));
        assert_eq!(minor_units("12.3", "USD"), Ok(1230));
        assert_eq!(minor_units("12", "USD"), Ok(1200));
        assert_eq!(minor_units("12900", "JPY"), Ok(12900));
        assert_eq!(minor_units("1.234", "BHD"), Ok(1234));
        assert_eq!(minor_units("-5.00", "EUR"), Ok(-500));
        assert!(
            minor_units("12.345", "USD")
                .unwrap_err()
                .contains("decimals")
        );
        assert!(minor_units("1.5", "JPY").is_err());
        assert!(minor_units("twelve", "USD").is_err());
        assert!(minor_units("", "USD").is_err());
        assert!(minor_units("1e3", "USD").is_err());
    }

    #[test]
    fn dates_are_read_as_utc_rfc3339() {
        assert_eq!(
            timestamp("2010-12-01", UTC).unwrap(),
            "2010-12-01T00:00:00Z"
        );
        assert_eq!(
            timestamp("2010-12-01 08:26", UTC).unwrap(),
            "2010-12-01T08:26:00Z"
        );
        assert_eq!(
            timestamp("2010-12-01 08:26:07", UTC).unwrap(),
            "2010-12-01T08:26:07Z"
        );
        assert_eq!(
            timestamp("2010-12-01T08:26:07", UTC).unwrap(),
            "2010-12-01T08:26:07Z"
        );
        assert_eq!(
            timestamp("2010-12-01T08:26:00+01:00", UTC).unwrap(),
            "2010-12-01T08:26:00+01:00"
        );
        assert_eq!(
            timestamp("2010-12-01T08:26:00.250Z", UTC).unwrap(),
            "2010-12-01T08:26:00.250Z"
        );
        assert!(timestamp("01/12/2010", UTC).is_err());
        assert!(timestamp("", UTC).is_err());
        assert!(timestamp("2010-13-01", UTC).is_err());
        assert!(timestamp("2010-02-30", UTC).is_err());
        assert!(timestamp("2010-12-01 25:00", UTC).is_err());
    }

    #[test]
    fn slash_dates_are_read_in_the_order_given() {
        // The UCI Online Retail original, and its day-first cousin.
        assert_eq!(
            timestamp("12/1/2010 8:26", MONTH_FIRST).unwrap(),
            "2010-12-01T08:26:00Z"
        );
        assert_eq!(
            timestamp("12/13/2010 17:05:09", MONTH_FIRST).unwrap(),
            "2010-12-13T17:05:09Z"
        );
        assert_eq!(
            timestamp("1/12/2010 8:26", MONTH_FIRST).unwrap(),
            "2010-01-12T08:26:00Z"
        );
        let day_first = Dates {
            order: Some(DateOrder::DayFirst),
            offset_minutes: 0,
        };
        assert_eq!(
            timestamp("1/12/2010 8:26", day_first).unwrap(),
            "2010-12-01T08:26:00Z"
        );
        assert_eq!(
            timestamp("13/12/2010", day_first).unwrap(),
            "2010-12-13T00:00:00Z"
        );
        // Without an order a slash date is refused, saying what to give.
        assert!(
            timestamp("12/1/2010 8:26", UTC)
                .unwrap_err()
                .contains("--date-order")
        );
        assert!(
            timestamp("13/12/2010 8:26", MONTH_FIRST)
                .unwrap_err()
                .contains("13 is not a month")
        );
        assert!(timestamp("2/30/2011 10:00", MONTH_FIRST).is_err());
        assert!(timestamp("12/1/10 8:26", MONTH_FIRST).is_err());
        assert!(timestamp("12/1/2010 8", MONTH_FIRST).is_err());
        assert!(timestamp("12/1/2010 8:6", MONTH_FIRST).is_err());
    }

    #[test]
    fn dates_without_an_offset_take_the_one_given() {
        let london_summer = Dates {
            order: Some(DateOrder::MonthFirst),
            offset_minutes: 60,
        };
        assert_eq!(
            timestamp("6/1/2011 9:00", london_summer).unwrap(),
            "2011-06-01T09:00:00+01:00"
        );
        assert_eq!(
            timestamp("2011-06-01", london_summer).unwrap(),
            "2011-06-01T00:00:00+01:00"
        );
        // A date with its own offset keeps it.
        assert_eq!(
            timestamp("2011-06-01T09:00:00Z", london_summer).unwrap(),
            "2011-06-01T09:00:00Z"
        );
        let new_york = Dates {
            order: None,
            offset_minutes: -300,
        };
        assert_eq!(
            epoch_ms(&timestamp("2011-01-01 19:00", new_york).unwrap()),
            epoch_ms("2011-01-02T00:00:00Z")
        );
    }

    #[test]
    fn utc_offsets_are_read_in_their_usual_spellings() {
        assert_eq!(parse_utc_offset("Z"), Ok(0));
        assert_eq!(parse_utc_offset("UTC"), Ok(0));
        assert_eq!(parse_utc_offset("+01:00"), Ok(60));
        assert_eq!(parse_utc_offset("-05:30"), Ok(-330));
        assert_eq!(parse_utc_offset("+0545"), Ok(345));
        assert_eq!(parse_utc_offset("+14"), Ok(840));
        for bad in [
            "+15:00",
            "+01:60",
            "1:00",
            "+1:00",
            "+01:0",
            "Europe/London",
            "",
            "+é:00",
        ] {
            assert!(parse_utc_offset(bad).is_err(), "{bad}");
        }
        assert_eq!(offset_text(-330), "-05:30");
        assert_eq!(offset_text(0), "Z");
    }

    #[test]
    fn a_file_settles_the_order_of_its_slash_dates_or_is_refused() {
        let settle = |dates: &[&str], given: Option<DateOrder>| {
            let mut survey = SlashDates::default();
            for (line, date) in dates.iter().enumerate() {
                survey.observe(line as u64 + 2, date);
            }
            survey.settle(given)
        };
        let uci = ["12/1/2010 8:26", "12/9/2010 9:00", "12/13/2010 10:00"];
        assert_eq!(settle(&uci, None).unwrap(), Some(DateOrder::MonthFirst));
        let european = ["1/12/2010 8:26", "13/12/2010 8:26"];
        assert_eq!(settle(&european, None).unwrap(), Some(DateOrder::DayFirst));
        let either = ["1/12/2010 8:26", "2/12/2010 8:26"];
        let error = settle(&either, None).unwrap_err().to_string();
        assert!(
            error.contains("--date-order") && error.contains("line 2"),
            "{error}"
        );
        assert_eq!(
            settle(&either, Some(DateOrder::DayFirst)).unwrap(),
            Some(DateOrder::DayFirst)
        );
        let mixed = ["12/13/2010 8:26", "13/12/2010 8:26"];
        let error = settle(&mixed, None).unwrap_err().to_string();
        assert!(error.contains("disagree"), "{error}");
        assert_eq!(settle(&["2010-12-01 08:26"], None).unwrap(), None);
    }

    #[test]
    fn the_same_row_gives_the_same_event_id() {
        let id = |order: &str| NAMESPACE.new_v5_parts(&["order.placed", order]);
        assert_eq!(id("o-1"), id("o-1"));
        assert_ne!(id("o-1"), id("o-2"));
        assert_eq!(id("o-1").get_version_num(), 5);
    }

    #[test]
    fn headers_are_matched_whatever_their_case_and_spacing() {
        let headers = csv::StringRecord::from(vec![
            "InvoiceNo",
            "StockCode",
            "Description",
            "Quantity",
            "InvoiceDate",
            "UnitPrice",
            "CustomerID",
            "Country",
        ]);
        let columns = Columns::find(&headers, Kind::OrderLines).unwrap();
        for (name, position) in [
            ("order_id", 0),
            ("sku", 1),
            ("quantity", 3),
            ("occurred_at", 4),
            ("unit_price", 5),
            ("customer_id", 6),
        ] {
            assert_eq!(columns.index.get(name), Some(&position), "{name}");
        }
        // Online Retail II spells some of them differently.
        let headers = csv::StringRecord::from(vec![
            "Invoice",
            "StockCode",
            "Quantity",
            "Invoice Date",
            "Price",
            "Customer ID",
        ]);
        let columns = Columns::find(&headers, Kind::OrderLines).unwrap();
        assert_eq!(columns.index.len(), 6);
        let headers = csv::StringRecord::from(vec!["InvoiceNo", "InvoiceDate", "CustomerID"]);
        let error = Columns::find(&headers, Kind::OrderLines)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("`sku`"), "{error}");
    }

    const UCI_HEADER: &str =
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n";

    /// An order-lines file, read the way `run` reads it: surveyed first,
    /// then grouped.
    fn group(body: &str) -> Vec<Unit> {
        let text = format!("{UCI_HEADER}{body}");
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(text.as_bytes());
        let columns = Columns::find(reader.headers().unwrap(), Kind::OrderLines).unwrap();
        let rows: Vec<SourceRow> = reader
            .records()
            .map(|record| {
                let record = record.unwrap();
                SourceRow {
                    line: record.position().unwrap().line(),
                    record,
                }
            })
            .collect();
        let reading = Reading {
            columns: &columns,
            currency: Some("GBP"),
            channel: None,
            dates: MONTH_FIRST,
        };
        let mut lines = OrderLines::default();
        for row in &rows {
            lines.survey(columns.get(&row.record, "order_id"), row.line);
        }
        let mut units = Vec::new();
        for row in rows {
            units.extend(lines.push(row, &reading));
        }
        units.extend(lines.finish(&reading));
        units
    }

    fn events(unit: &Unit) -> &[Value] {
        match &unit.outcome {
            Outcome::Events(events) => events,
            Outcome::Refused(reasons) => panic!("refused: {reasons:?}"),
        }
    }

    fn reasons(unit: &Unit) -> &[String] {
        match &unit.outcome {
            Outcome::Refused(reasons) => reasons,
            Outcome::Events(events) => panic!("not refused: {events:?}"),
        }
    }

    #[test]
    fn an_invoices_lines_become_one_order() {
        let units = group(
            "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850,United Kingdom\n\
             536365,71053,WHITE METAL LANTERN,6,12/1/2010 8:26,3.39,17850,United Kingdom\n\
             536365,84406B,\"CREAM CUPID HEARTS COAT HANGER\",8,12/1/2010 8:26,2.75,17850,United Kingdom\n\
             536366,22633,HAND WARMER UNION JACK,6,12/1/2010 8:28,1.85,17850,United Kingdom\n",
        );
        assert_eq!(units.len(), 2);
        assert_eq!(
            units[0].rows.iter().map(|row| row.line).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        let placed = &events(&units[0])[0];
        assert_eq!(placed["type"], "order.placed");
        assert_eq!(placed["occurred_at"], "2010-12-01T08:26:00Z");
        assert_eq!(placed["customer"], json!({"customer_id": "17850"}));
        // 6 × 2.55 + 6 × 3.39 + 8 × 2.75 pounds
        assert_eq!(
            placed["data"],
            json!({"order_id": "536365", "total_minor": 5764, "currency": "GBP", "items": [
                {"sku": "85123A", "quantity": 6, "unit_price_minor": 255},
                {"sku": "71053", "quantity": 6, "unit_price_minor": 339},
                {"sku": "84406B", "quantity": 8, "unit_price_minor": 275},
            ]})
        );
        assert_eq!(
            placed["event_id"],
            NAMESPACE
                .new_v5_parts(&["order.placed", "536365"])
                .to_string()
        );
        assert_eq!(events(&units[1])[0]["data"]["total_minor"], 1110);
    }

    #[test]
    fn lines_without_a_customer_are_refused() {
        let units = group(
            "536414,22139,,56,12/1/2010 11:52,0,,United Kingdom\n\
             536414,22140,,2,12/1/2010 11:52,0,,United Kingdom\n\
             536415,22952,CAKE CASES,10,12/1/2010 11:57,0.55,17850,United Kingdom\n",
        );
        assert_eq!(units.len(), 2);
        for reason in reasons(&units[0]) {
            assert!(reason.starts_with("no customer"), "{reason}");
        }
        assert_eq!(events(&units[1]).len(), 1);
    }

    #[test]
    fn an_invoice_whose_lines_are_apart_or_disagree_is_refused_whole() {
        let units = group(
            "1001,A,,1,12/1/2010 8:26,1.00,17850,UK\n\
             1002,B,,1,12/1/2010 8:27,1.00,17850,UK\n\
             1001,C,,1,12/1/2010 8:26,1.00,17850,UK\n\
             1003,A,,1,12/1/2010 9:00,1.00,17850,UK\n\
             1003,B,,1,12/1/2010 9:01,1.00,17850,UK\n\
             1004,A,,1,12/1/2010 9:00,1.00,17850,UK\n\
             1004,B,,1,12/1/2010 9:00,1.00,17851,UK\n\
             1005,A,,1,12/1/2010 9:00,1.00,17850,UK\n\
             1005,B,,1,12/1/2010 9:00,1.00,,UK\n",
        );
        assert_eq!(units.len(), 6);
        assert!(reasons(&units[0])[0].contains("not consecutive"));
        assert!(reasons(&units[0])[0].contains("more lines further on"));
        assert_eq!(events(&units[1]).len(), 1);
        assert!(reasons(&units[2])[0].contains("on line 2"));
        assert!(reasons(&units[3])[0].contains("different dates"));
        assert_eq!(reasons(&units[3]).len(), 2);
        assert!(reasons(&units[4])[0].contains("lines 7 and 8 name different ones"));
        assert!(reasons(&units[5])[0].contains("line 10 names none"));
        // The customer's identifiers stay out of the reasons.
        assert!(!reasons(&units[4])[0].contains("1785"));
    }

    #[test]
    fn a_bad_line_refuses_its_invoice_with_its_own_reason() {
        let units = group(
            "1001,A,,2,12/1/2010 8:26,1.00,17850,UK\n\
             1001,B,,2,12/1/2010 8:26,0.001,17850,UK\n\
             1002,A,,-2,12/1/2010 8:30,1.00,17850,UK\n",
        );
        let first = reasons(&units[0]);
        assert!(first[0].contains("refused whole: line 3"), "{}", first[0]);
        assert!(first[1].contains("more decimals"), "{}", first[1]);
        assert!(reasons(&units[1])[0].contains("only a cancellation"));
    }

    #[test]
    fn a_cancellation_refunds_the_latest_earlier_orders_of_its_items() {
        let units = group(
            "1001,A,,6,12/1/2010 8:26,2.55,17850,UK\n\
             1001,B,,2,12/1/2010 8:26,1.00,17850,UK\n\
             1002,A,,6,12/2/2010 8:26,2.55,17850,UK\n\
             C1003,A,,-8,12/3/2010 9:00,2.55,17850,UK\n\
             C1004,B,,-2,12/4/2010 9:00,1.00,17850,UK\n\
             C1005,A,,-4,12/5/2010 9:00,2.55,17850,UK\n\
             C1006,A,,-1,12/5/2010 9:00,2.55,17850,UK\n\
             C1007,D,Discount,-1,12/5/2010 9:00,5.00,17850,UK\n",
        );
        assert_eq!(units.len(), 7);
        // 8 of A: the 6 of 1002 first (every unit of it: cancelled), then 2 of 1001.
        let first = events(&units[2]);
        let summary: Vec<(String, String, Value)> = first
            .iter()
            .map(|event| {
                (
                    event["type"].as_str().unwrap().to_owned(),
                    event["data"]["order_id"].as_str().unwrap().to_owned(),
                    event["data"]["amount_minor"].clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("order.refunded".into(), "1001".into(), json!(510)),
                ("order.refunded".into(), "1002".into(), json!(1530)),
                ("order.cancelled".into(), "1002".into(), Value::Null),
            ]
        );
        assert_eq!(first[0]["occurred_at"], "2010-12-03T09:00:00Z");
        assert_eq!(first[0]["customer"], json!({"customer_id": "17850"}));
        // The 2 of B: a refund of 1001, not yet every unit of it.
        assert_eq!(events(&units[3]).len(), 1);
        assert_eq!(events(&units[3])[0]["data"]["amount_minor"], 200);
        // The last 4 of A: 1001 is all back now, and cancelled.
        let types: Vec<&str> = events(&units[4])
            .iter()
            .map(|event| event["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["order.refunded", "order.cancelled"]);
        // Nothing of A is left to cancel, and D was never bought.
        assert!(reasons(&units[5])[0].contains("have 0 of it not yet cancelled"));
        assert!(reasons(&units[6])[0].contains("stock code D"));
    }

    #[test]
    fn a_cancellation_never_reaches_another_customer_or_a_later_order() {
        let units = group(
            "1001,A,,6,12/1/2010 8:26,2.55,17850,UK\n\
             C1002,A,,-1,12/2/2010 9:00,2.55,17851,UK\n\
             C1003,A,,-1,11/30/2010 9:00,2.55,17850,UK\n\
             C1004,A,,-1,12/2/2010 9:00,2.55,17850,UK\n",
        );
        assert!(reasons(&units[1])[0].contains("have 0"));
        assert!(reasons(&units[2])[0].contains("have 0"));
        assert_eq!(events(&units[3])[0]["data"]["amount_minor"], 255);
    }

    #[test]
    fn an_invoice_too_long_for_one_event_keeps_its_total() {
        let mut body = String::new();
        for line in 0..600 {
            body.push_str(&format!(
                "1001,SKU-{line:05},,1,12/1/2010 8:26,1.00,17850,UK\n"
            ));
        }
        let units = group(&body);
        let placed = &events(&units[0])[0];
        assert_eq!(placed["data"]["total_minor"], 60_000);
        assert!(placed["data"].get("items").is_none());
        assert!(encoded_len(placed) <= MAX_EVENT_BYTES);
    }

    #[test]
    fn the_checkpoint_waits_for_every_earlier_batch() {
        let mut acknowledgements = Acknowledgements::default();
        for (sequence, through_line) in [(0, 100), (1, 200), (2, 300)] {
            acknowledgements.sent(sequence, through_line);
        }
        assert_eq!(acknowledgements.acknowledged(1), None);
        assert_eq!(acknowledgements.acknowledged(2), None);
        assert_eq!(acknowledgements.acknowledged(0), Some(300));
    }

    #[test]
    fn a_batch_cut_inside_a_unit_only_vouches_for_the_units_before() {
        let mut batcher = Batcher {
            size: 2,
            current: Vec::new(),
            bytes: 0,
            next_sequence: 0,
            handled_through: 0,
        };
        let row = |line| SourceRow {
            line,
            record: csv::StringRecord::new(),
        };
        let event = || json!({"type": "order.refunded"});
        assert!(batcher.add(vec![event()], &[row(2)], 2).is_empty());
        // Four events of lines 3-4: the two batches cut while they are
        // added vouch only for line 2; the unit is done with the next.
        let four = vec![event(), event(), event(), event()];
        let cut = |full: Vec<Batch>| -> Vec<(u64, u64, usize)> {
            full.iter()
                .map(|batch| (batch.sequence, batch.through_line, batch.events.len()))
                .collect()
        };
        assert_eq!(
            cut(batcher.add(four, &[row(3), row(4)], 4)),
            [(0, 2, 2), (1, 2, 2)]
        );
        assert_eq!(cut(batcher.add(vec![event()], &[row(5)], 5)), [(2, 5, 2)]);
        batcher.handled(7);
        assert!(batcher.rest().is_none());
        assert_eq!(cut(batcher.add(vec![event()], &[row(8)], 8)), []);
        let rest = batcher.rest().unwrap();
        assert_eq!((rest.sequence, rest.through_line), (3, 8));
    }

    #[test]
    fn resuming_keeps_the_refused_rows_up_to_the_checkpoint() {
        let directory = std::env::temp_dir().join(format!(
            "rapportctl-import-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("orders.rejects.csv");
        std::fs::write(
            &path,
            "line,reason,order_id\n5,bad,o-5\n9,\"bad, twice\",o-9\n12,bad,o-12\n",
        )
        .unwrap();
        let mut rejects = Rejects {
            path: path.clone(),
            headers: csv::StringRecord::from(vec!["order_id"]),
            file: None,
        };
        assert_eq!(rejects.resume(10).unwrap(), 2);
        rejects
            .add(12, "bad", &csv::StringRecord::from(vec!["o-12"]))
            .unwrap();
        rejects.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "line,reason,order_id\n5,bad,o-5\n9,\"bad, twice\",o-9\n12,bad,o-12\n"
        );
        std::fs::remove_dir_all(&directory).unwrap();
    }

    proptest::proptest! {
        #[test]
        fn fuzz_no_amount_date_or_offset_text_panics(text in ".*") {
            let _ = minor_units(&text, "USD");
            let _ = minor_units(&text, "JPY");
            let _ = timestamp(&text, UTC);
            let _ = timestamp(&text, MONTH_FIRST);
            let _ = parse_utc_offset(&text);
            let _ = slash_fields(&text);
        }
    }
}
