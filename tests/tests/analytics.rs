//! Customer analytics end to end: storefront events over HTTP, through the
//! broker, identity and the projector, scored over the query API.

use std::time::Duration;

use rapport_e2e::{Pipeline, event};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(90);
const AS_OF: &str = "2026-11-01";

fn order(customer: Value, day: &str, order_id: &str, total_minor: i64) -> Value {
    event(
        "order.placed",
        &format!("{day}T12:00:00Z"),
        customer,
        json!({"order_id": order_id, "total_minor": total_minor, "currency": "USD"}),
    )
}

fn known(id: &str) -> Value {
    json!({"customer_id": id, "email": format!("{id}@example.com")})
}

/// A dozen regular customers, so the models have a population to fit.
fn regulars() -> Vec<Value> {
    let mut events = Vec::new();
    for customer in 0..12_u32 {
        let id = format!("c-reg-{customer:02}");
        let purchases = 1 + customer % 4;
        for purchase in 0..purchases {
            let month = 1 + (customer + purchase * 2) % 10;
            let day = format!("2026-{month:02}-{:02}", 3 + customer);
            let total = 3_000 + 1_250 * i64::from(customer) + 400 * i64::from(purchase % 2);
            events.push(order(
                known(&id),
                &day,
                &format!("o-{id}-{purchase}"),
                total,
            ));
        }
    }
    events
}

fn score_of(value: &Value) -> u8 {
    let score = value
        .as_u64()
        .unwrap_or_else(|| panic!("not a score: {value}"));
    assert!((1..=5).contains(&score), "a score is 1 to 5: {score}");
    score as u8
}

/// The segment slug the documented RFM grid (docs/analytics.md) gives an (R, FM) cell.
fn documented_segment(r: u8, fm: u8) -> &'static str {
    match (r, fm) {
        (5, 4..=5) => "champions",
        (3..=4, 4..=5) => "loyal_customers",
        (4..=5, 2..=3) => "potential_loyalists",
        (5, 1) => "new_customers",
        (4, 1) => "promising",
        (3, 3) => "need_attention",
        (3, 1..=2) => "about_to_sleep",
        (1..=2, 3..=4) => "at_risk",
        (1..=2, 5) => "cant_lose_them",
        (2, 1..=2) => "hibernating",
        (1, 1..=2) => "lost",
        _ => panic!("no segment for R {r}, FM {fm}"),
    }
}

fn scores(pipeline: &Pipeline, customer: &str, as_of: &str) -> Value {
    pipeline.wait_for_json(
        &format!("/v1/customers/{customer}/scores?as_of={as_of}"),
        PATIENCE,
        |_| true,
    )
}

#[test]
fn scores_segments_and_models_follow_the_log() {
    let mut pipeline = Pipeline::start("analytics");
    pipeline.send_ok(&regulars());

    // Given a guest who ordered by email, then registered as c-vip and kept buying
    let vip = known("c-vip");
    pipeline.send_ok(&[order(
        json!({"email": "c-vip@example.com"}),
        "2026-06-01",
        "o-guest",
        40_000,
    )]);
    pipeline.send_ok(&[event(
        "customer.registered",
        "2026-06-02T09:00:00Z",
        vip.clone(),
        json!({"name": "Vera Ip"}),
    )]);
    pipeline.send_ok(&[
        order(vip.clone(), "2026-07-01", "o-vip-1", 30_000),
        order(vip.clone(), "2026-08-01", "o-vip-2", 20_000),
        order(vip.clone(), "2026-09-01", "o-vip-3", 10_000),
        // refunded in part before as_of, the cancellation comes after it
        event(
            "order.refunded",
            "2026-09-10T10:00:00Z",
            vip.clone(),
            json!({"order_id": "o-vip-1", "amount_minor": 5_000}),
        ),
        event(
            "order.cancelled",
            "2026-11-05T10:00:00Z",
            vip.clone(),
            json!({"order_id": "o-vip-3"}),
        ),
        // 950 points earned by then; a redemption of 1 000 overdraws
        event(
            "points.redeemed",
            "2026-10-01T10:00:00Z",
            vip.clone(),
            json!({"points": 1000, "reason": "voucher"}),
        ),
    ]);
    pipeline.wait_until_caught_up(PATIENCE);

    // When c-vip is scored on 1 November
    let at_first = scores(&pipeline, "c-vip", AS_OF);

    // Then the guest order counts, the later cancellation does not, the refund does
    assert_eq!(at_first["customer_id"], "c-vip");
    assert_eq!(at_first["as_of"], AS_OF);
    let rfm = &at_first["rfm"];
    assert_eq!(rfm["frequency"], 4, "{at_first}");
    assert_eq!(rfm["monetary_minor"], 40_000 + 25_000 + 20_000 + 10_000);
    assert_eq!(rfm["recency_days"], 61);
    assert_eq!(rfm["currency"], "USD");
    assert_eq!(rfm["m"], 5, "the biggest spender");
    // The segment is the documented grid's cell for the scores.
    let (r, f, m) = (
        score_of(&rfm["r"]),
        score_of(&rfm["f"]),
        score_of(&rfm["m"]),
    );
    assert_eq!(
        rfm["segment"],
        documented_segment(r, (f + m).div_ceil(2)),
        "{rfm}"
    );
    // Four occasions in the last year: loyal while P(alive) holds up, per
    // the documented order of the lifecycle rules.
    let p_alive = at_first["churn"]["p_alive"]
        .as_f64()
        .expect("BG/NBD fitted");
    let expected_stage = if p_alive < 0.1 {
        "churned"
    } else if p_alive < 0.5 {
        "at_risk"
    } else {
        "loyal"
    };
    assert_eq!(at_first["lifecycle"], expected_stage, "{at_first}");
    // The CDNOW test checks P(alive), expected purchases and CLV against
    // independent values; here only that the money is the reporting currency's.
    assert_eq!(at_first["clv"]["currency"], "USD");
    let loyalty = &at_first["loyalty"];
    assert_eq!(loyalty["tier"], "Silver", "950.00 in the last 12 months");
    assert_eq!(loyalty["points"], 950 - 1_000);
    assert_eq!(loyalty["over_redemptions"][0]["shortfall_points"], 50);

    // …and after the cancellation the order is gone
    let later = scores(&pipeline, "c-vip", "2026-11-06");
    assert_eq!(later["rfm"]["frequency"], 3);
    assert_eq!(later["rfm"]["monetary_minor"], 85_000);
    // …and before the first order there was nothing to score
    let before = scores(&pipeline, "c-vip", "2026-01-01");
    assert!(before["rfm"].is_null() && before["lifecycle"].is_null());

    // A new order shows in the customer's scores as soon as it is applied
    pipeline.send_ok(&[order(vip.clone(), "2026-10-30", "o-vip-4", 7_000)]);
    let updated = pipeline.wait_for_json(
        &format!("/v1/customers/c-vip/scores?as_of={AS_OF}"),
        PATIENCE,
        |body| body["rfm"]["frequency"] == 5,
    );
    assert_eq!(updated["rfm"]["recency_days"], 2);

    // The models are fitted over every buyer (the CDNOW test checks the
    // fitted values against published ones)…
    let (status, model) = pipeline.get(&format!("/v1/models/bgnbd?as_of={AS_OF}"));
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["customers"], 13);
    // …and Gamma-Gamma over the repeat buyers acquired in the cohort:
    // c-reg-01, 02, 03, 05, 06, 07, 09, 10, 11 and c-vip.
    let (status, model) = pipeline.get(&format!(
        "/v1/models/gamma-gamma?as_of={AS_OF}&cohort_from=2026-01-01&cohort_to=2026-12-31"
    ));
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["customers"], 10, "{model}");

    // Segments count every customer once per segmentation
    let (status, segments) = pipeline.get(&format!("/v1/segments?as_of={AS_OF}"));
    assert_eq!(status, 200, "{segments}");
    assert_eq!(segments["customers"], 13);
    for kind in ["rfm", "lifecycle", "value_tier", "loyalty"] {
        let total: u64 = segments[kind]
            .as_object()
            .unwrap()
            .values()
            .map(|count| count.as_u64().unwrap())
            .sum();
        assert_eq!(total, 13, "{kind}: {segments}");
    }

    // The mailing list of c-vip's lifecycle stage includes them
    let stage = updated["lifecycle"].as_str().unwrap();
    let (status, csv) = pipeline.get(&format!(
        "/v1/segments/lifecycle/{stage}/customers?as_of={AS_OF}&format=csv"
    ));
    assert_eq!(status, 200, "{csv}");
    let csv = csv.as_str().expect("CSV, not JSON");
    assert!(csv.starts_with("customer_id,email,phone,name,email_consent\n"));
    assert!(
        csv.lines()
            .any(|line| line.starts_with("c-vip,c-vip@example.com,")),
        "{csv}"
    );

    // After a clean restart the projector reads its scoreboard back rather
    // than scanning, and answers as before (once c-vip's labels follow
    // their last order)
    let scores_before = scores(&pipeline, "c-vip", AS_OF);
    let segment = scores_before["rfm"]["segment"].as_str().unwrap().to_owned();
    let members = format!("/v1/segments/rfm/{segment}/customers?as_of={AS_OF}");
    let lists_vip = |body: &Value| {
        body["customers"]
            .as_array()
            .is_some_and(|people| people.iter().any(|person| person["customer_id"] == "c-vip"))
    };
    pipeline.wait_for_json(&members, PATIENCE, lists_vip);
    let (_, segments_before) = pipeline.get(&format!("/v1/segments?as_of={AS_OF}"));
    pipeline.projector.restart_cleanly();
    let (status, segments_after) = pipeline.get(&format!("/v1/segments?as_of={AS_OF}"));
    assert_eq!(status, 200, "{segments_after}");
    assert_eq!(segments_after, segments_before);
    assert_eq!(scores(&pipeline, "c-vip", AS_OF), scores_before);
    let (_, listed) = pipeline.get(&members);
    assert!(lists_vip(&listed), "{listed}");
    let log = std::fs::read_to_string(pipeline.dir.path().join("projector.log")).unwrap();
    assert!(log.contains("wrote the scoreboard's image"), "{log}");
    assert!(
        log.contains("read the scoreboard back from its image"),
        "{log}"
    );
    assert_eq!(
        log.matches("built the scoreboard").count(),
        1,
        "one scan, before the restart: {log}"
    );

    // …and what is applied after the restart reaches the scores
    pipeline.send_ok(&[order(vip.clone(), "2026-10-31", "o-vip-5", 3_000)]);
    pipeline.wait_for_json(
        &format!("/v1/customers/c-vip/scores?as_of={AS_OF}"),
        PATIENCE,
        |body| body["rfm"]["frequency"] == 6,
    );
}
