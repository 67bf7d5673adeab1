//! Segment's tracking API, driven by the official clients as a shop runs
//! them: segment-analytics-python and @segment/analytics-node (installed at
//! pinned versions by `infra/clients.sh`), and analytics.js in Debian's
//! headless Chromium through the snippet ingest serves. Everything goes
//! through the real ingest, broker, identity and projector.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use rapport_e2e::browser::Browser;
use rapport_e2e::{Pipeline, http_agent, test_keys};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(90);

/// Where `infra/clients.sh` installed the clients (`RAPPORT_CLIENTS`, set
/// by `make test`; run here otherwise).
fn clients() -> PathBuf {
    if let Ok(directory) = std::env::var("RAPPORT_CLIENTS") {
        return PathBuf::from(directory);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new("bash")
        .arg(root.join("infra/clients.sh"))
        .output()
        .expect("infra/clients.sh runs");
    assert!(
        output.status.success(),
        "infra/clients.sh failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    PathBuf::from(stdout.lines().last().expect("the directory").trim())
}

/// Runs `program` with a script, failing the test with its output when it fails.
fn run_script(program: &PathBuf, script: &str, extension: &str, directory: &std::path::Path) {
    let path = directory.join(format!("client.{extension}"));
    std::fs::write(&path, script).expect("the script is written");
    let output = Command::new(program)
        .arg(&path)
        .env("NODE_PATH", clients().join("node/node_modules"))
        .output()
        .expect("the client runs");
    assert!(
        output.status.success(),
        "{} failed:\n{}\n{}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A person after identify, an anonymous page view, alias, an order of
/// 30.00 USD with products and a refund of 5.00: one person, one order,
/// 25.00 net, the page view merged in.
fn assert_one_person(pipeline: &Pipeline, id: &str) {
    let person = pipeline.wait_for_json(&format!("/v1/customers/{id}"), PATIENCE, |person| {
        // Every event applied: the identify's two events may come last
        person["orders"]["count"] == 1
            && person["orders"]["net_spend_minor"]["USD"] == 2_500
            && person["event_counts"]["web.page_viewed"] == 1
            && person["event_counts"]["customer.updated"] == 1
    });
    assert_eq!(person["profile"]["name"], format!("Name {id}"), "{person}");
    assert_eq!(person["attributes"]["plan"], "gold", "{person}");
    pipeline.wait_until_caught_up(PATIENCE);
    let (_, person) = pipeline.get(&format!("/v1/customers/{id}"));
    assert_eq!(person["event_counts"]["customer.registered"], 1, "{person}");
    assert_eq!(person["event_counts"]["customer.updated"], 1, "{person}");
    // Scored as of tomorrow, the day after the order
    let tomorrow = rapport_projections::time::format_day(
        rapport_projections::time::utc_day(rapport_common::now_ms()) + 1,
    );
    let path = format!("/v1/customers/{id}/scores?as_of={tomorrow}");
    let scores = pipeline.wait_for_json(&path, PATIENCE, |scores| {
        scores["rfm"]["r"].as_u64().is_some()
    });
    assert_eq!(
        scores["loyalty"]["rolling_net_spend_minor"], 2_500,
        "{scores}"
    );
    let (status, timeline) = pipeline.get(&format!("/v1/customers/{id}/timeline?limit=50"));
    assert_eq!(status, 200);
    let text = timeline.to_string();
    assert!(text.contains("order.refunded"), "{timeline}");
}

#[test]
fn the_official_server_clients_send_one_person_each() {
    let pipeline = Pipeline::start("tracking-clients");
    let clients = clients();
    let directory = tempfile::tempdir().expect("a directory");
    let host = pipeline.ingest_url();
    let key = &test_keys().write;

    // segment-analytics-python sends the key in the body only, gzipped here.
    let python = format!(
        r#"
import sys
import segment.analytics as analytics
errors = []
analytics.write_key = {key:?}
analytics.host = {host:?}
analytics.gzip = True
analytics.on_error = lambda error, batch: errors.append(repr(error))
analytics.identify("py-1", {{"email": "py-1@example.com", "name": "Name py-1", "plan": "gold"}})
analytics.page(anonymous_id="anon-py", name="Tea", properties={{"url": "https://shop.example/tea"}})
analytics.alias("anon-py", "py-1")
analytics.track("py-1", "Order Completed", {{"order_id": "py-o1", "total": 30.0, "currency": "USD",
    "products": [{{"product_id": "tea-1", "price": 10.0, "quantity": 3}}]}})
analytics.track("py-1", "Order Refunded", {{"order_id": "py-o1", "total": 5, "currency": "USD"}})
analytics.flush()
analytics.shutdown()
if errors:
    sys.exit("refused: " + "; ".join(errors))
"#
    );
    run_script(
        &clients.join("python/bin/python"),
        &python,
        "py",
        directory.path(),
    );

    // @segment/analytics-node sends the key as the Basic user name.
    let node = format!(
        r#"
const {{ Analytics }} = require('@segment/analytics-node');
const analytics = new Analytics({{ writeKey: {key:?}, host: {host:?}, path: '/v1/batch', flushAt: 3 }});
analytics.on('error', (error) => {{ console.error('refused', error); process.exitCode = 1; }});
analytics.identify({{ userId: 'node-1', traits: {{ email: 'node-1@example.com', name: 'Name node-1', plan: 'gold' }} }});
analytics.page({{ anonymousId: 'anon-node', name: 'Tea', properties: {{ url: 'https://shop.example/tea' }} }});
analytics.alias({{ userId: 'node-1', previousId: 'anon-node' }});
analytics.track({{ userId: 'node-1', event: 'Order Completed', properties: {{ order_id: 'node-o1', total: 30, currency: "USD",
  products: [{{ product_id: 'tea-1', price: 10, quantity: 3 }}] }} }});
analytics.track({{ userId: 'node-1', event: 'Order Refunded', properties: {{ order_id: 'node-o1', total: 5, currency: "USD" }} }});
analytics.closeAndFlush({{ timeout: 30000 }}).then(() => console.log('flushed'));
"#
    );
    run_script(&PathBuf::from("node"), &node, "js", directory.path());

    for id in ["py-1", "node-1"] {
        assert_one_person(&pipeline, id);
    }
}

fn post(pipeline: &Pipeline, path: &str, key: Option<&str>, body: &[u8]) -> (u16, Value) {
    let mut request = http_agent()
        .post(format!("{}{path}", pipeline.ingest_url()))
        .header("content-type", "application/json");
    if let Some(key) = key {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
        request = request.header("authorization", format!("Basic {basic}"));
    }
    let mut response = request.send(body).expect("ingest answers");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn refusals_are_what_the_clients_expect_and_a_retry_counts_once() {
    let pipeline = Pipeline::start("tracking-refusals");
    let key = test_keys().write.as_str();
    let batch = |messages: Value| json!({ "batch": messages }).to_string().into_bytes();
    let good = json!([{"type": "track", "event": "Viewed Tea", "userId": "r-1",
        "timestamp": "2026-11-01T10:00:00Z", "properties": {"sku": "tea-1"}}]);
    // case, key, body, status, code
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: [Case<'_>; 5] = [
        (
            "a bad key",
            Some("rk_write_0000"),
            batch(good.clone()),
            401,
            "unauthorized",
        ),
        (
            "a read key",
            Some(test_keys().read.as_str()),
            batch(good.clone()),
            403,
            "forbidden",
        ),
        (
            "malformed JSON",
            Some(key),
            b"{\"batch\": [{".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "no user or anonymous id",
            Some(key),
            batch(json!([{"type": "track", "event": "E"}])),
            400,
            "invalid_request",
        ),
        (
            "an oversized message",
            Some(key),
            batch(
                json!([{"type": "track", "event": "E", "userId": "r-1", "properties": {"pad": "x".repeat(40 * 1024)}}]),
            ),
            400,
            "invalid_request",
        ),
    ];
    for (case, key, body, status, code) in cases {
        let (answer_status, answer) = post(&pipeline, "/v1/batch", key, &body);
        assert_eq!(answer_status, status, "{case}: {answer}");
        assert_eq!(answer["code"], code, "{case}: {answer}");
    }
    // Sent twice without message ids (a client retrying after a timeout):
    // the events derive the same ids and count once.
    for _ in 0..2 {
        let (status, answer) = post(&pipeline, "/v1/batch", Some(key), &batch(good.clone()));
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer, json!({"success": true}));
    }
    let person = pipeline.wait_for_json("/v1/customers/r-1", PATIENCE, |person| {
        person["event_counts"]["custom.tracked"] == 1
    });
    pipeline.wait_until_caught_up(PATIENCE);
    let (_, person_after) = pipeline.get("/v1/customers/r-1");
    assert_eq!(person_after["event_counts"], person["event_counts"]);
}

/// Serves `page` at `/` on a free port, for the browser.
fn serve_page(page: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = listener.local_addr().expect("an address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("a stream"));
            let mut line = String::new();
            // The request line and headers, up to the blank line
            while reader.read_line(&mut line).is_ok_and(|read| read > 0) && line != "\r\n" {
                line.clear();
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    format!("http://{address}")
}

#[test]
fn analytics_js_in_chromium_tracks_a_visitor_who_then_identifies() {
    let pipeline = Pipeline::start("tracking-browser");
    let key = &test_keys().write;
    let ingest = pipeline.ingest_url();
    // The shop's page: the snippet, then what the shop's own code calls.
    let page = format!(
        r#"<!doctype html><html><head><title>Tea shop</title><link rel="icon" href="data:,">
<script src="{ingest}/v1/snippet.js?writeKey={key}"></script>
</head><body><h1>Tea</h1><script>
analytics.track("Order Completed", {{order_id: "web-o1", total: 30, currency: "USD",
  products: [{{product_id: "tea-1", price: 10, quantity: 3}}]}});
analytics.track("Order Refunded", {{order_id: "web-o1", total: 5, currency: "USD"}});
analytics.identify("web-1", {{email: "web-1@example.com", name: "Name web-1", plan: "gold"}});
analytics.ready(function () {{ window.trackingReady = true; }});
</script></body></html>"#
    );
    let shop = serve_page(page);
    let browser = Browser::launch();
    let mut tab = browser.new_page();
    tab.goto(&format!("{shop}/"));
    rapport_e2e::wait_for("analytics.js to load", PATIENCE, || {
        tab.eval_bool("window.trackingReady === true")
    });
    // The anonymous page view and order end up on the identified person
    assert_one_person(&pipeline, "web-1");
    let anonymous = tab.eval_string("analytics.user().anonymousId()");
    let (status, found) = pipeline.get(&format!("/v1/customers?anonymous_id={anonymous}"));
    assert_eq!(status, 200, "{found}");
    assert_eq!(
        found["identifiers"]["customer_id"],
        json!(["web-1"]),
        "{found}"
    );
    assert_eq!(
        found["identifiers"]["anonymous_id"],
        json!([anonymous]),
        "{found}"
    );
    let problems = tab.problems();
    assert!(problems.is_empty(), "{problems:#?}");
}
