//! `rapportctl import orders|customers FILE.csv`: loads a shop's history
//! from CSV through ingest's `POST /v1/events`, so imported events are
//! checked and sealed like any other. Columns are found by their header
//! names. Each row is checked with ingest's own rules before it is sent; a
//! row that breaks one goes to a rejects file with its line and the reason.
//! Event ids are derived from the rows (UUID v5 of the order id or the
//! customer's identifiers), so an import run again, whole or after an
//! interruption, sends the same events and the log counts each once.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rapport_projections::money::{ExtraDecimals, decimal_to_minor};
use serde_json::{Map, Value, json};

use crate::progress::Progress;

/// What the rows are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// One row per order: `order.placed` events.
    Orders,
    /// One row per customer: `customer.registered` events.
    Customers,
}

/// The namespace of imported event ids (UUID v5), so the same row always
/// gives the same id.
const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6a1c_9f0e_44b1_4c5e_9a3d_2f6b_8e71_c0d4);

/// Retries of a batch ingest answers 429 or 503.
const RETRIES: u32 = 30;

/// The header names a column may have, the first one the documented name.
const ORDER_COLUMNS: [&[&str]; 8] = [
    &["order_id", "order"],
    &["occurred_at", "date", "ordered_at", "created_at"],
    &["customer_id", "customer"],
    &["email"],
    &["phone"],
    &["total", "amount"],
    &["total_minor"],
    &["currency"],
];
const CUSTOMER_COLUMNS: [&[&str]; 7] = [
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
}

/// What an import did.
#[derive(Debug, Default)]
pub(crate) struct Summary {
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

impl Columns {
    fn find(headers: &csv::StringRecord, kind: Kind) -> anyhow::Result<Self> {
        let known: &[&[&str]] = match kind {
            Kind::Orders => &ORDER_COLUMNS,
            Kind::Customers => &CUSTOMER_COLUMNS,
        };
        let normalised: Vec<String> = headers
            .iter()
            .map(|header| header.trim().to_ascii_lowercase().replace([' ', '-'], "_"))
            .collect();
        let mut index = HashMap::new();
        let mut used = HashSet::new();
        for names in known {
            if let Some(position) = normalised
                .iter()
                .position(|header| names.contains(&header.as_str()))
            {
                index.insert(names[0], position);
                used.insert(position);
            }
        }
        let extra = normalised
            .iter()
            .enumerate()
            .filter(|(position, header)| !used.contains(position) && !header.is_empty())
            .map(|(position, header)| (header.clone(), position))
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
        if kind == Kind::Orders {
            need("order_id")?;
            if !columns.index.contains_key("total") && !columns.index.contains_key("total_minor") {
                bail!("the file has neither a `total` nor a `total_minor` column");
            }
        }
        if !["customer_id", "email", "phone"]
            .iter()
            .any(|name| columns.index.contains_key(name))
        {
            bail!(
                "the file has none of the columns `customer_id`, `email`, `phone`: nothing says whose a row is"
            );
        }
        Ok(columns)
    }

    fn get<'a>(&self, record: &'a csv::StringRecord, name: &str) -> &'a str {
        self.index
            .get(name)
            .and_then(|position| record.get(*position))
            .map_or("", str::trim)
    }
}

/// `2024-03-01`, `2024-03-01 10:00[:00]` (UTC) or RFC 3339, as RFC 3339.
fn timestamp(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("occurred_at is empty".to_owned());
    }
    let candidate = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else if text.len() >= 16 && text.as_bytes()[10] == b' ' && !text.contains(['Z', '+']) {
        let seconds = if text.len() == 16 { ":00" } else { "" };
        format!("{}T{}{seconds}Z", &text[..10], &text[11..])
    } else {
        text.to_owned()
    };
    rapport_projections::time::parse_rfc3339(&candidate)
        .map(|_| candidate)
        .map_err(|error| format!("occurred_at {text:?}: {error}"))
}

/// A decimal amount in major units as minor units of `currency`.
fn minor_units(text: &str, currency: &str) -> Result<i64, String> {
    decimal_to_minor(text, currency, ExtraDecimals::Refuse)
        .map_err(|reason| format!("total {reason}"))
}

/// The event a row stands for, or why it cannot be one.
fn event_of(
    kind: Kind,
    columns: &Columns,
    record: &csv::StringRecord,
    options: &Options,
) -> Result<Value, String> {
    let occurred_at = timestamp(columns.get(record, "occurred_at"))?;
    let mut customer = Map::new();
    for name in ["customer_id", "email", "phone"] {
        let value = columns.get(record, name);
        if !value.is_empty() {
            customer.insert(name.to_owned(), json!(value));
        }
    }
    if customer.is_empty() {
        return Err("no customer_id, email or phone: nothing says whose the row is".to_owned());
    }
    match kind {
        Kind::Orders => {
            let order_id = columns.get(record, "order_id");
            if order_id.is_empty() {
                return Err("order_id is empty".to_owned());
            }
            let currency = match columns.get(record, "currency") {
                "" => options
                    .currency
                    .clone()
                    .ok_or("currency is empty (give --currency for files without one)")?,
                currency => currency.to_ascii_uppercase(),
            };
            let total_minor = match columns.get(record, "total_minor") {
                "" => minor_units(columns.get(record, "total"), &currency)?,
                text => text
                    .parse::<i64>()
                    .map_err(|_| format!("total_minor {text:?} is not a whole number"))?,
            };
            let mut event = json!({
                "event_id": NAMESPACE.new_v5_parts(&["order.placed", order_id]).to_string(),
                "type": "order.placed",
                "occurred_at": occurred_at,
                "customer": customer,
                "data": {"order_id": order_id, "total_minor": total_minor, "currency": currency},
            });
            if let Some(channel) = &options.channel {
                event["channel"] = json!(channel);
            }
            Ok(event)
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
            let identity: Vec<&str> = ["customer_id", "email", "phone"]
                .iter()
                .map(|name| columns.get(record, name))
                .collect();
            let channel = match columns.get(record, "channel") {
                "" => options.channel.clone(),
                channel => Some(channel.to_owned()),
            };
            let mut parts = vec!["customer.registered"];
            parts.extend(identity);
            let mut event = json!({
                "event_id": NAMESPACE.new_v5_parts(&parts).to_string(),
                "type": "customer.registered",
                "occurred_at": occurred_at,
                "customer": customer,
                "data": data,
            });
            if let Some(channel) = channel {
                event["channel"] = json!(channel);
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

/// The rejects file, made at the first refused row: `line`, `reason`, then
/// the row's own columns under their own headers, so it can be fixed and
/// imported again once the first two columns are cut.
struct Rejects {
    path: PathBuf,
    headers: csv::StringRecord,
    file: Option<csv::Writer<File>>,
}

impl Rejects {
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

    fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(writer) = self.file.as_mut() {
            writer.flush()?;
        }
        Ok(())
    }
}

/// Sends one batch, retrying while ingest is busy; gives back the rows
/// ingest refused with its reason (none unless its rules differ from ours).
fn send(
    agent: &ureq::Agent,
    url: &str,
    authorization: Option<&str>,
    events: &[Value],
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

/// A row: its line, its fields (for the rejects file), its event.
type Row = (u64, csv::StringRecord, Value);

/// What sending one batch came to: the events sent, and the rows ingest
/// refused with its reason (none unless its rules differ from ours).
type Delivered = anyhow::Result<(u64, Vec<(u64, String, csv::StringRecord)>)>;

/// Sends a batch; rows ingest refuses are set aside and the rest sent again.
fn deliver(
    agent: &ureq::Agent,
    url: &str,
    authorization: Option<&str>,
    batch: Vec<Row>,
) -> Delivered {
    let events: Vec<Value> = batch.iter().map(|(_, _, event)| event.clone()).collect();
    let refused = send(agent, url, authorization, &events)?;
    if refused.is_empty() {
        return Ok((batch.len() as u64, Vec::new()));
    }
    let refused_rows: HashSet<usize> = refused.iter().map(|(index, _)| *index).collect();
    let rest: Vec<Value> = batch
        .iter()
        .enumerate()
        .filter(|(index, _)| !refused_rows.contains(index))
        .map(|(_, (_, _, event))| event.clone())
        .collect();
    if !rest.is_empty() && !send(agent, url, authorization, &rest)?.is_empty() {
        bail!("ingest refused rows it had accepted a moment before");
    }
    let set_aside = refused
        .into_iter()
        .filter_map(|(index, reason)| {
            let (line, record, _) = batch.get(index)?;
            Some((*line, reason, record.clone()))
        })
        .collect();
    Ok((rest.len() as u64, set_aside))
}

/// Reads, checks and sends every row of the file.
pub(crate) fn run(options: &Options) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let size = std::fs::metadata(&options.file)
        .with_context(|| format!("reading {}", options.file.display()))?
        .len();
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(&options.file)
        .with_context(|| format!("opening {}", options.file.display()))?;
    let columns = Columns::find(reader.headers()?, options.kind)?;
    let rejects_path = options
        .rejects
        .clone()
        .unwrap_or_else(|| rejects_beside(&options.file));
    let mut rejects = Rejects {
        path: rejects_path.clone(),
        headers: reader.headers()?.clone(),
        file: None,
    };
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
    let batch_size = options.batch.max(1);
    let mut batch: Vec<Row> = Vec::with_capacity(batch_size);
    let mut record = csv::StringRecord::new();
    let senders = if options.dry_run {
        0
    } else {
        options.parallel.max(1)
    };
    // Batches go to `senders` threads, each with one request in flight;
    // what they came to comes back here, where the rejects are written.
    let (batch_sender, batch_receiver) = std::sync::mpsc::sync_channel::<Vec<Row>>(senders);
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
        let absorb = |outcome: Delivered, summary: &mut Summary, rejects: &mut Rejects| {
            let (sent, refused) = outcome?;
            summary.sent += sent;
            for (line, reason, record) in refused {
                rejects.add(line, &reason, &record)?;
                summary.refused += 1;
            }
            anyhow::Ok(())
        };
        while reader.read_record(&mut record)? {
            let line = record.position().map_or(0, |position| position.line());
            summary.rows += 1;
            let event = event_of(options.kind, &columns, &record, options).and_then(|event| {
                check(&event)?;
                Ok(event)
            });
            match event {
                Ok(event) => {
                    let id = event["event_id"]
                        .as_str()
                        .and_then(|id| uuid::Uuid::parse_str(id).ok())
                        .map_or(0, |id| id.as_u128());
                    if let Some(first) = seen.get(&id) {
                        rejects.add(line, &format!("repeats the row on line {first}"), &record)?;
                        summary.refused += 1;
                    } else {
                        seen.insert(id, line);
                        batch.push((line, record.clone(), event));
                    }
                }
                Err(reason) => {
                    rejects.add(line, &reason, &record)?;
                    summary.refused += 1;
                }
            }
            if batch.len() >= batch_size {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                if options.dry_run {
                    summary.sent += full.len() as u64;
                } else {
                    batch_sender
                        .send(full)
                        .map_err(|_| anyhow::anyhow!("the senders stopped"))?;
                }
                while let Ok(outcome) = outcomes.try_recv() {
                    absorb(outcome, &mut summary, &mut rejects)?;
                }
                progress.show(
                    reader.position().byte(),
                    size,
                    format!("{} rows, {} refused", summary.rows, summary.refused),
                );
            }
        }
        if options.dry_run {
            summary.sent += batch.len() as u64;
        } else if !batch.is_empty() {
            batch_sender
                .send(std::mem::take(&mut batch))
                .map_err(|_| anyhow::anyhow!("the senders stopped"))?;
        }
        drop(batch_sender);
        for outcome in outcomes {
            absorb(outcome, &mut summary, &mut rejects)?;
        }
        Ok(())
    })?;
    rejects.finish()?;
    drop(progress);
    let elapsed = started.elapsed().as_secs_f64().max(0.001);
    println!(
        "{} {} rows of {} in {elapsed:.1} s ({:.0} rows/s): {} {}, {} refused",
        if options.dry_run {
            "checked"
        } else {
            "imported"
        },
        summary.rows,
        options.file.display(),
        summary.rows as f64 / elapsed,
        summary.sent,
        if options.dry_run {
            "would be sent"
        } else {
            "events sent"
        },
        summary.refused,
    );
    if summary.refused > 0 {
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
        assert_eq!(timestamp("2010-12-01").unwrap(), "2010-12-01T00:00:00Z");
        assert_eq!(
            timestamp("2010-12-01 08:26").unwrap(),
            "2010-12-01T08:26:00Z"
        );
        assert_eq!(
            timestamp("2010-12-01 08:26:07").unwrap(),
            "2010-12-01T08:26:07Z"
        );
        assert_eq!(
            timestamp("2010-12-01T08:26:00+01:00").unwrap(),
            "2010-12-01T08:26:00+01:00"
        );
        assert!(timestamp("01/12/2010").is_err());
        assert!(timestamp("").is_err());
    }

    #[test]
    fn the_same_row_gives_the_same_event_id() {
        let id = |order: &str| NAMESPACE.new_v5_parts(&["order.placed", order]);
        assert_eq!(id("o-1"), id("o-1"));
        assert_ne!(id("o-1"), id("o-2"));
        assert_eq!(id("o-1").get_version_num(), 5);
    }

    proptest::proptest! {
        #[test]
        fn fuzz_no_amount_or_date_text_panics(text in ".*") {
            let _ = minor_units(&text, "USD");
            let _ = minor_units(&text, "JPY");
            let _ = timestamp(&text);
        }
    }
}
