//! API keys end to end: keys made with `rapportctl keys create` open the
//! routes of their scope on every service and no others; a missing,
//! unknown, revoked or expired key gets 401, a key of the wrong kind 403;
//! a revocation reaches every service within 5 s without a restart; a key
//! over its rate gets 429 with Retry-After; uses are recorded.

use std::time::{Duration, Instant};

use rapport_e2e::{Pipeline, bearer, event, http_agent, wait_for};
use serde_json::{Value, json};

/// Status, `WWW-Authenticate` and JSON body of a request with the
/// `Authorization` header `authorization`.
fn call(method: &str, url: &str, authorization: Option<&str>) -> (u16, Option<String>, Value) {
    let agent = http_agent();
    let response = match method {
        "POST" => {
            let mut request = agent.post(url).header("content-type", "application/json");
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            let body = json!({"events": [event(
                "web.page_viewed",
                "2026-11-01T10:00:00Z",
                json!({"customer_id": "c-keys"}),
                json!({"url": "/"}),
            )]});
            request.send_json(&body)
        }
        _ => {
            let mut request = agent.get(url);
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            request.call()
        }
    };
    let mut response = response.expect("the service answers");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, challenge, body)
}

/// Makes a key with rapportctl; returns its secret and id.
fn create_key(pipeline: &Pipeline, kind: &str, name: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["keys", "create", "--kind", kind, "--name", name];
    args.extend(extra);
    let secret = pipeline.rapportctl(&args).trim().to_owned();
    assert!(secret.starts_with(&format!("rk_{kind}_")), "{secret}");
    let id = listed(pipeline)
        .into_iter()
        .find(|key| key["name"] == name)
        .and_then(|key| key["id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("{name} is not listed"));
    (secret, id)
}

fn listed(pipeline: &Pipeline) -> Vec<Value> {
    let text = pipeline.rapportctl(&["keys", "list", "--json"]);
    let keys: Value = serde_json::from_str(&text).expect("keys list --json is JSON");
    let keys = keys.as_array().expect("an array").clone();
    assert!(
        !text.contains("rk_"),
        "the list must never show a secret: {text}"
    );
    keys
}

#[test]
fn each_route_takes_the_keys_of_its_scope_only() {
    let pipeline = Pipeline::start_configured(
        "keys",
        "[rate_limits]\nwrite_per_second = 1000000\nread_per_second = 5\nadmin_per_second = 1000000\nfailed_auth_per_minute = 1000000\n",
    );
    let (write, write_id) = create_key(&pipeline, "write", "storefront", &[]);
    let (read, read_id) = create_key(&pipeline, "read", "analysts", &[]);
    let admin = rapport_e2e::test_keys().admin.clone();
    let ingest = pipeline.ingest_url();
    let query = pipeline.query_url();
    let identity = pipeline.identity_url();
    // (method, url, the kind of key it needs; None = open)
    let routes: Vec<(&str, String, Option<&str>)> = vec![
        ("POST", format!("{ingest}/v1/events"), Some("write")),
        ("GET", format!("{ingest}/metrics"), Some("read")),
        ("GET", format!("{ingest}/healthz"), None),
        (
            "GET",
            format!("{query}/v1/customers/c-nobody"),
            Some("read"),
        ),
        ("GET", format!("{query}/v1/segments"), Some("read")),
        ("GET", format!("{query}/metrics"), Some("read")),
        ("GET", format!("{query}/v1/admin/status"), Some("admin")),
        ("GET", format!("{query}/healthz"), None),
        ("GET", format!("{identity}/v1/admin/status"), Some("admin")),
        ("GET", format!("{identity}/metrics"), Some("read")),
        ("GET", format!("{identity}/healthz"), None),
    ];
    let keys = [("write", &write), ("read", &read), ("admin", &admin)];
    for (method, url, needs) in &routes {
        let Some(needs) = needs else {
            let (status, _, body) = call(method, url, None);
            assert_eq!(status, 200, "{method} {url} is open: {body}");
            continue;
        };
        let (status, challenge, body) = call(method, url, None);
        assert_eq!(status, 401, "{method} {url} without a key: {body}");
        assert!(
            challenge.is_some_and(|value| value.contains("Bearer")),
            "{url}"
        );
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|text| text.contains("API key")),
            "{body}"
        );
        let (status, _, body) = call(method, url, Some(&bearer("rk_read_0123")));
        assert_eq!(status, 401, "{method} {url} with an unknown key: {body}");
        for (kind, secret) in keys {
            let granted = kind == *needs || kind == "admin";
            // The read key is rate-limited in this pipeline: pace it.
            if kind == "read" {
                std::thread::sleep(Duration::from_millis(250));
            }
            let (status, _, body) = call(method, url, Some(&bearer(secret)));
            if granted {
                assert!(
                    status == 200 || status == 202 || status == 404,
                    "{method} {url} with the {kind} key: {status} {body}"
                );
            } else {
                assert_eq!(status, 403, "{method} {url} with the {kind} key: {body}");
                assert!(
                    body["error"]
                        .as_str()
                        .is_some_and(|text| text.contains("scope")),
                    "a 403 names the scope needed: {body}"
                );
            }
        }
    }

    // Tracking SDKs send the write key as the Basic user name.
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{write}:"));
    let (status, _, body) = call(
        "POST",
        &format!("{ingest}/v1/events"),
        Some(&format!("Basic {basic}")),
    );
    assert_eq!(status, 202, "{body}");

    // A key over its rate is told when to come back.
    let mut limited = None;
    for _ in 0..50 {
        let (status, _, body) = call("GET", &format!("{query}/v1/segments"), Some(&bearer(&read)));
        if status == 429 {
            limited = Some(body);
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    let limited = limited.expect("50 quick reads at 5 a second hit the limit");
    assert!(
        limited["error"]
            .as_str()
            .is_some_and(|text| text.contains(&read_id)),
        "{limited}"
    );
    let mut response = http_agent()
        .get(&format!("{query}/v1/segments"))
        .header("authorization", bearer(&read))
        .call()
        .unwrap();
    if response.status().as_u16() == 429 {
        let wait: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&wait), "{wait}");
    }
    let _ = response.body_mut().read_to_string();

    // Uses are written back to the registry (at most once a minute).
    wait_for(
        "the write key's last use to be listed",
        Duration::from_secs(30),
        || {
            listed(&pipeline).iter().any(|key| {
                key["id"] == write_id.as_str() && key["last_used_at_ms"].as_i64().is_some()
            })
        },
    );

    // A revoked key stops working on every service within 5 s, without a
    // restart.
    let revoked_at = Instant::now();
    pipeline.rapportctl(&["keys", "revoke", &write_id]);
    // Every service says "revoked" (before any scope check) once it knows.
    let everywhere = [
        ("POST", format!("{ingest}/v1/events")),
        ("GET", format!("{query}/v1/segments")),
        ("GET", format!("{identity}/metrics")),
    ];
    let refused_everywhere = || {
        everywhere.iter().all(|(method, url)| {
            let (status, _, body) = call(method, url, Some(&bearer(&write)));
            status == 401
                && body["error"]
                    .as_str()
                    .is_some_and(|text| text.contains("revoked"))
        })
    };
    wait_for(
        "the revoked key to be refused by every service",
        Duration::from_secs(5),
        refused_everywhere,
    );
    // The admin key was never affected.
    let (status, _, _) = call(
        "GET",
        &format!("{identity}/v1/admin/status"),
        Some(&bearer(&admin)),
    );
    assert_eq!(status, 200);
    let listed_state = listed(&pipeline)
        .into_iter()
        .find(|key| key["id"] == write_id.as_str())
        .expect("still listed");
    assert!(
        listed_state["revoked_at_ms"].as_i64().is_some(),
        "{listed_state}"
    );
    eprintln!("revocation took effect after {:?}", revoked_at.elapsed());
}

#[test]
fn an_expired_key_is_refused_and_a_new_key_works_without_a_restart() {
    let pipeline = Pipeline::start("keys-expiry");
    let expires_at = rapport_projections::time::format_rfc3339(rapport_common::now_ms() + 4_000);
    let (soon, _) = create_key(
        &pipeline,
        "read",
        "short-lived",
        &["--expires-at", &expires_at],
    );
    let url = format!("{}/v1/segments", pipeline.query_url());
    // A key made after the services started works without a restart.
    wait_for("the new key to work", Duration::from_secs(5), || {
        call("GET", &url, Some(&bearer(&soon))).0 == 200
    });
    wait_for("the key to expire", Duration::from_secs(15), || {
        call("GET", &url, Some(&bearer(&soon))).0 == 401
    });
    let (_, _, body) = call("GET", &url, Some(&bearer(&soon)));
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|text| text.contains("expired")),
        "{body}"
    );
}
