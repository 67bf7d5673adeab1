//! The customer analytics on real data, checked against values Rapport did
//! not compute: the CDNOW sample (2 357 customers of an online music shop,
//! 6 919 purchases in 1997–98) sent over HTTP as orders, then the BG/NBD and
//! Gamma-Gamma fits and a few customers' scores read over the query API.
//!
//! Expected values come from two independent sources:
//! * the published fits: Fader, Hardie & Lee (2005), "Counting your
//!   customers the easy way" (BG/NBD: r 0.243, α 4.414, a 0.793, b 2.426,
//!   LL −9582.4), and Fader & Hardie (2013), "The Gamma-Gamma model of
//!   monetary value" (p 6.25, q 3.74, γ 15.44 dollars);
//! * the lifetimes library (0.11.3) fitted on the same occasions, for the
//!   parameters to more digits and for individual customers' scores
//!   (`tests/data/cdnow_reference.py` prints every value used here).
//!
//! The purchases keep their own dates, 1997 and 1998.

use std::time::Duration;

use rapport_e2e::{Pipeline, event};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(120);
/// The end of the papers' 39-week calibration period.
const AS_OF: &str = "1997-09-30";

/// One line of the sample: the customer (1..=2357), the day, cents.
struct Purchase {
    customer: u32,
    date: String,
    cents: i64,
}

fn purchases() -> Vec<Purchase> {
    let text = include_str!("../data/cdnow_sample.txt");
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, customer, date, _, dollars] = fields[..] else {
                panic!("a sample line has five fields: {line:?}");
            };
            let (whole, fraction) = dollars.split_once('.').unwrap_or((dollars, "0"));
            let cents = whole.parse::<i64>().unwrap() * 100
                + format!("{fraction:0<2}")[..2].parse::<i64>().unwrap();
            Purchase {
                customer: customer.parse().unwrap(),
                date: format!("{}-{}-{}", &date[..4], &date[4..6], &date[6..8]),
                cents,
            }
        })
        .collect()
}

/// `actual` within `relative` of `expected`.
fn close(what: &str, actual: &Value, expected: f64, relative: f64) {
    let actual = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {actual}"));
    assert!(
        (actual - expected).abs() <= relative * expected.abs(),
        "{what}: {actual} is not within {relative} of {expected}"
    );
}

/// `actual` within `absolute` of `expected`.
fn near(what: &str, actual: &Value, expected: f64, absolute: f64) {
    let actual = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {actual}"));
    assert!(
        (actual - expected).abs() <= absolute,
        "{what}: {actual} is not within {absolute} of {expected}"
    );
}

#[test]
fn the_cdnow_sample_fits_as_published_and_scores_as_lifetimes_does() {
    let purchases = purchases();
    assert_eq!(purchases.len(), 6_919);
    let pipeline = Pipeline::start("cdnow");
    let events: Vec<Value> = purchases
        .iter()
        .enumerate()
        .map(|(line, purchase)| {
            event(
                "order.placed",
                &format!("{}T12:00:00Z", purchase.date),
                json!({"customer_id": format!("cdnow-{}", purchase.customer)}),
                json!({"order_id": format!("cdnow-{line}"), "total_minor": purchase.cents, "currency": "USD"}),
            )
        })
        .collect();
    for batch in events.chunks(1_000) {
        pipeline.send_ok(batch);
    }
    pipeline.wait_until_caught_up(PATIENCE);

    let (status, model) = pipeline.get(&format!("/v1/models/bgnbd?as_of={AS_OF}"));
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["customers"], 2_357, "{model}");
    assert_eq!(model["time_unit"], "weeks");
    // The paper's figures, to the digits it gives them…
    for (name, published) in [("r", 0.243), ("alpha", 4.414), ("a", 0.793), ("b", 2.426)] {
        near(name, &model[name], published, 0.0006);
    }
    near("log_likelihood", &model["log_likelihood"], -9_582.4, 0.05);
    // …and lifetimes' maximum of the same likelihood, to more.
    for (name, lifetimes) in [
        ("r", 0.242_595),
        ("alpha", 4.413_602),
        ("a", 0.792_922),
        ("b", 2.425_907),
    ] {
        close(name, &model[name], lifetimes, 1e-5);
    }

    let (status, model) = pipeline.get(&format!("/v1/models/gamma-gamma?as_of={AS_OF}"));
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["customers"], 946, "the repeat buyers: {model}");
    // Published in dollars; Rapport fits cents, so γ is 100 times larger.
    near("p", &model["p"], 6.25, 0.005);
    near("q", &model["q"], 3.74, 0.005);
    near("gamma", &model["gamma"], 1_544.0, 0.5);
    close("p", &model["p"], 6.249_572, 1e-5);
    close("q", &model["q"], 3.744_225, 1e-5);
    close("gamma", &model["gamma"], 1_544.352_1, 1e-5);

    // Customers of every kind: few and many repeats, recent and lapsed,
    // and one who never came back (x = 0).
    // (customer, P(alive), expected purchases in 90 days, CLV over 365 days in cents)
    let references = [
        (1, 0.726_620_31, 0.452_482_88, 3_624.988_9),
        (2, 0.212_391_04, 0.073_983_27, 463.783_0),
        (18, 0.310_855_77, 0.108_281_99, 634.394_3),
        (28, 0.693_589_32, 0.242_358_25, 5_352.304_5),
        (157, 0.969_221_27, 7.760_485_63, 62_502.492_4),
        (1516, 0.968_854_44, 8.195_710_00, 97_142.447_3),
        (2357, 1.0, 0.093_760_62, 1_100.960_5),
    ];
    for (customer, p_alive, expected, clv) in references {
        let path = format!("/v1/customers/cdnow-{customer}/scores?as_of={AS_OF}");
        let (status, scores) = pipeline.get(&path);
        assert_eq!(status, 200, "{path}: {scores}");
        let churn = &scores["churn"];
        near(
            &format!("{customer}: p_alive"),
            &churn["p_alive"],
            p_alive,
            1e-6,
        );
        assert_eq!(churn["horizon_days"], 90);
        close(
            &format!("{customer}: expected purchases"),
            &churn["expected_purchases"],
            expected,
            1e-5,
        );
        assert_eq!(scores["clv"]["horizon_days"], 365);
        close(
            &format!("{customer}: CLV"),
            &scores["clv"]["expected_value_minor"],
            clv,
            1e-5,
        );
        // At risk exactly when P(alive) is below the default 0.5; the
        // one-time buyer is judged by the gap rule instead (see docs/analytics.md).
        if customer != 2357 {
            assert_eq!(churn["at_risk"], p_alive < 0.5, "{customer}: {churn}");
        }
    }
}
