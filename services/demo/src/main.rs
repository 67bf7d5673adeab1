//! `rapport-demo`: sends realistic storefront traffic to the ingest service.
//!
//! First a backfill: months of history for several thousand customers over
//! every channel, including guests who buy by email, browse on a device and
//! register later (so identity merges them), and a few households sharing an
//! email (so identity records conflicts). Then a live trickle until Ctrl-C.
//! The backfill's event ids follow from the seed, so running the demo again
//! sends events identity already has, and drops.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use rapport_projections::time::format_rfc3339;
use serde_json::{Value, json};

/// Feed demo storefront traffic into Rapport's ingest service.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Base URL of the ingest service.
    #[arg(
        long,
        env = "RAPPORT_INGEST_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    ingest_url: String,
    /// A write key for ingest, sent as `Authorization: Bearer <key>`; `make
    /// run` keeps one in ./data/keys.env (`rapportctl keys create --kind
    /// write` makes another).
    #[arg(long, env = "RAPPORT_WRITE_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Number of customers in the backfill.
    #[arg(long, default_value_t = 3000)]
    customers: u32,
    /// Days of history the backfill spreads over, ending now.
    #[arg(long, default_value_t = 180)]
    days: u32,
    /// Events per request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Live events per second after the backfill; 0 stops after the backfill.
    #[arg(long, default_value_t = 20)]
    live_rate: u32,
    /// Seed of the pseudo-random generator, for reproducible traffic.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// xorshift64*: small, fast and reproducible; the demo needs no more.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const CITIES: [&str; 8] = [
    "Hangzhou", "Shanghai", "Berlin", "Lyon", "Austin", "Osaka", "Porto", "Nairobi",
];
const NAMES: [&str; 10] = [
    "Ana", "Bo", "Chen", "Dara", "Eli", "Femi", "Gus", "Hana", "Ivo", "Jun",
];
const PAGES: [&str; 6] = [
    "/",
    "/tea",
    "/tea/oolong",
    "/teaware",
    "/sale",
    "/blog/brewing",
];
const SKUS: [(&str, i64); 5] = [
    ("tea-oolong", 4500),
    ("tea-green", 3200),
    ("teapot", 12900),
    ("cups-set", 6800),
    ("sampler", 1900),
];

fn event(kind: &str, at_ms: i64, customer: Value, data: Value) -> (i64, Value) {
    let body = json!({"event_id": uuid::Uuid::now_v7().to_string(), "type": kind, "occurred_at": format_rfc3339(at_ms), "customer": customer, "data": data});
    (at_ms, body)
}

/// The id of a backfill event: the same for the same seed, customer and
/// event, so a second run (every `make run` starts the demo) sends the same
/// events again and identity drops them by id instead of doubling the
/// history.
fn backfill_event_id(seed: u64, customer: u32, number: usize) -> String {
    let name = format!("rapport-demo/backfill/{seed}/{customer}/{number}");
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes()).to_string()
}

/// The whole life of one demo customer, as timestamped events.
fn customer_history(
    index: u32,
    random: &mut Random,
    start_ms: i64,
    end_ms: i64,
) -> Vec<(i64, Value)> {
    let span = (end_ms - start_ms).max(1) as u64;
    let mut at = start_ms + random.below(span / 2) as i64;
    let step = |random: &mut Random, at: &mut i64| {
        *at = (*at + 3_600_000 + random.below(span / 12) as i64).min(end_ms);
        *at
    };
    let customer_id = format!("c-{index:05}");
    // A few households share one email: identity keeps them apart.
    let email = if matches!(index % 250, 1 | 2) {
        format!("household{}@example.com", index / 250)
    } else {
        format!("user{index}@example.com")
    };
    let device = format!("dev-{index:05}");
    let phone = format!("+1 555 {:03} {:04}", index % 1000, index);
    let registered = json!({"customer_id": customer_id, "email": email, "anonymous_id": device});
    let guest = random.chance(35);
    let mut events = Vec::new();

    // Browsing before anything else, on a device.
    for _ in 0..1 + random.below(4) {
        let when = step(random, &mut at);
        events.push(event(
            "web.page_viewed",
            when,
            json!({"anonymous_id": device}),
            json!({"url": random.pick(&PAGES), "duration_ms": 500 + random.below(60_000)}),
        ));
    }
    let buyer = if guest {
        json!({"email": email})
    } else {
        registered.clone()
    };
    if guest {
        // A guest checkout by email first; many register later.
        let when = step(random, &mut at);
        let (sku, price) = SKUS[random.below(SKUS.len() as u64) as usize];
        events.push(event("order.placed", when, buyer.clone(), json!({"order_id": format!("g-{index}"), "total_minor": price, "currency": "USD", "items": [{"sku": sku, "quantity": 1, "unit_price_minor": price}]})));
        if !random.chance(50) {
            return events;
        }
    }
    let when = step(random, &mut at);
    events.push(event(
        "customer.registered",
        when,
        registered.clone(),
        json!({"name": format!("{} {}", random.pick(&NAMES), index), "city": random.pick(&CITIES), "phone": phone, "attributes": {"source": random.pick(&["ads", "search", "friend"])}}),
    ));
    events.push(event(
        "consent.changed",
        when + 1000,
        registered.clone(),
        json!({"channel": "email", "granted": true}),
    ));

    let orders = random.below(8);
    for order in 0..orders {
        let when = step(random, &mut at);
        let campaign = format!("cmp-{}", when / 86_400_000 / 30);
        let message = format!("m-{index}-{order}");
        events.push(event(
            "email.sent",
            when,
            registered.clone(),
            json!({"message_id": message, "campaign_id": campaign}),
        ));
        if random.chance(60) {
            events.push(event(
                "email.opened",
                when + 600_000,
                registered.clone(),
                json!({"message_id": message, "campaign_id": campaign}),
            ));
            if random.chance(40) {
                events.push(event(
                    "email.clicked",
                    when + 700_000,
                    registered.clone(),
                    json!({"message_id": message, "campaign_id": campaign, "url": "/sale"}),
                ));
            }
        } else if random.chance(5) {
            events.push(event(
                "email.bounced",
                when + 60_000,
                registered.clone(),
                json!({"message_id": message}),
            ));
        }
        events.push(event(
            "web.page_viewed",
            when + 800_000,
            json!({"anonymous_id": device}),
            json!({"url": random.pick(&PAGES)}),
        ));
        let (sku, price) = SKUS[random.below(SKUS.len() as u64) as usize];
        let quantity = 1 + random.below(3) as i64;
        let order_id = format!("o-{index}-{order}");
        events.push(event("order.placed", when + 900_000, registered.clone(), json!({"order_id": order_id, "total_minor": price * quantity, "currency": "USD", "items": [{"sku": sku, "quantity": quantity, "unit_price_minor": price}]})));
        if random.chance(5) {
            events.push(event(
                "order.cancelled",
                when + 1_000_000,
                registered.clone(),
                json!({"order_id": order_id}),
            ));
        } else if random.chance(5) {
            events.push(event(
                "order.refunded",
                when + 5_000_000,
                registered.clone(),
                json!({"order_id": order_id, "amount_minor": price}),
            ));
        }
        if random.chance(15) {
            let ticket = format!("t-{index}-{order}");
            let category = random.pick(&["complaint", "inquiry", "after_sales"]);
            events.push(event(
                "ticket.opened",
                when + 6_000_000,
                json!({"phone": phone}),
                json!({"ticket_id": ticket, "category": category, "subject": "about my order"}),
            ));
            events.push(event("call.completed", when + 6_100_000, json!({"phone": phone}), json!({"direction": "inbound", "duration_s": 60 + random.below(900), "outcome": "logged", "agent_id": "agent-7"})));
            if random.chance(70) {
                events.push(event(
                    "ticket.resolved",
                    when + 90_000_000,
                    registered.clone(),
                    json!({"ticket_id": ticket}),
                ));
            }
        }
        if random.chance(20) {
            events.push(event("survey.answered", when + 100_000_000, registered.clone(), json!({"survey_id": format!("nps-{index}-{order}"), "nps": random.below(11), "csat": 1 + random.below(5)})));
        }
    }
    if orders > 3 && random.chance(30) {
        let when = step(random, &mut at);
        events.push(event(
            "points.redeemed",
            when,
            registered.clone(),
            json!({"points": 100 * (1 + random.below(5)), "reason": "voucher"}),
        ));
    }
    events
}

/// Where ingest sends events, and how the demo says who it is.
struct Ingest {
    agent: ureq::Agent,
    url: String,
    /// `Bearer <key>`, when a key was given.
    authorization: Option<String>,
}

fn post(ingest: &Ingest, events: &[Value]) -> anyhow::Result<()> {
    let body = serde_json::to_vec(&json!({ "events": events }))?;
    for attempt in 0..60 {
        let mut request = ingest
            .agent
            .post(&ingest.url)
            .header("content-type", "application/json");
        if let Some(authorization) = &ingest.authorization {
            request = request.header("authorization", authorization);
        }
        let mut response = request.send(&body[..]).context("sending to ingest")?;
        match response.status().as_u16() {
            202 => return Ok(()),
            503 => {
                // Back off as told, then retry the same batch: event ids make it safe.
                let wait = response
                    .headers()
                    .get("retry-after")
                    .and_then(|value| value.to_str().ok()?.parse().ok())
                    .unwrap_or(1u64);
                eprintln!("[demo] ingest busy (attempt {attempt}), retrying in {wait} s");
                std::thread::sleep(Duration::from_secs(wait));
            }
            status @ (401 | 403) => bail!(
                "ingest answered {status}: {}; the demo needs a live write key: pass --key or set RAPPORT_WRITE_KEY (./data/keys.env has one after make run)",
                response.body_mut().read_to_string().unwrap_or_default()
            ),
            status => bail!(
                "ingest answered {status}: {}",
                response.body_mut().read_to_string().unwrap_or_default()
            ),
        }
    }
    bail!("ingest stayed unavailable for a minute")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let url = format!("{}/v1/events", args.ingest_url.trim_end_matches('/'));
    let key = args
        .key
        .as_deref()
        .map(str::trim)
        .filter(|key| !key.is_empty());
    if key.is_some_and(|key| !key.bytes().all(|byte| byte.is_ascii_graphic())) {
        bail!(
            "--key (or RAPPORT_WRITE_KEY) is not an API key: a key is one word of ASCII letters, digits and _"
        );
    }
    let ingest = Ingest {
        agent,
        url,
        authorization: key.map(|key| format!("Bearer {key}")),
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let start_ms = now_ms - i64::from(args.days) * 86_400_000;
    let mut random = Random(args.seed.max(1));

    let mut history: Vec<(i64, Value)> = (0..args.customers)
        .flat_map(|index| {
            let mut events = customer_history(index, &mut random, start_ms, now_ms);
            for (number, (_, event)) in events.iter_mut().enumerate() {
                event["event_id"] = json!(backfill_event_id(args.seed, index, number));
            }
            events
        })
        .collect();
    // Send in the order things happened, so registrations follow guest checkouts.
    history.sort_by_key(|(at, _)| *at);
    let total = history.len();
    eprintln!(
        "[demo] backfilling {total} events for {} customers over {} days into {}",
        args.customers, args.days, ingest.url
    );
    let started = Instant::now();
    let events: Vec<Value> = history.into_iter().map(|(_, event)| event).collect();
    for (number, chunk) in events.chunks(args.batch.max(1)).enumerate() {
        post(&ingest, chunk)?;
        let sent = ((number + 1) * args.batch).min(total);
        if number % 20 == 0 || sent == total {
            let rate = sent as f64 / started.elapsed().as_secs_f64().max(0.001);
            eprintln!("[demo] backfill {sent}/{total} events ({rate:.0} events/s)");
        }
    }
    eprintln!(
        "[demo] backfill done in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    if args.live_rate == 0 {
        return Ok(());
    }
    eprintln!(
        "[demo] live traffic: about {} events/s until stopped",
        args.live_rate
    );
    let mut sent = 0u64;
    loop {
        let tick = Instant::now();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        let mut batch = Vec::new();
        while batch.len() < args.live_rate as usize {
            let index = random.below(u64::from(args.customers)) as u32;
            let customer = json!({"customer_id": format!("c-{index:05}"), "anonymous_id": format!("dev-{index:05}")});
            batch.push(match random.below(4) {
                0 => event("order.placed", now_ms, customer, json!({"order_id": format!("live-{now_ms}-{sent}"), "total_minor": 1900 + random.below(20_000), "currency": "USD"})).1,
                1 => event("email.opened", now_ms, customer, json!({"message_id": format!("live-{sent}")})).1,
                _ => event("web.page_viewed", now_ms, json!({"anonymous_id": format!("dev-{index:05}")}), json!({"url": random.pick(&PAGES)})).1,
            });
            sent += 1;
        }
        post(&ingest, &batch)?;
        if sent % (u64::from(args.live_rate) * 60) < u64::from(args.live_rate) {
            eprintln!("[demo] {sent} live events sent");
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
    }
}
