//! The dashboard in a real browser: Debian's headless Chromium over the
//! running services (ingest, identity, projector) fed by the demo's
//! storefront traffic. Screenshots of every page go to
//! `rapport_e2e::browser::screenshot_dir()`.

use std::process::Command;
use std::time::Duration;

use rapport_e2e::browser::{Browser, Page, screenshot_dir};
use rapport_e2e::{Pipeline, bin_dir, get_json_with_key, test_keys, wait_for};
use serde_json::Value;

/// Demo customers: enough for every RFM cell to fill, few enough to load
/// in seconds.
const CUSTOMERS: u32 = 300;

fn feed_demo(pipeline: &Pipeline) {
    let status = Command::new(bin_dir().join("rapport-demo"))
        .args([
            "--ingest-url",
            &pipeline.ingest_url(),
            "--customers",
            &CUSTOMERS.to_string(),
            "--days",
            "400",
            "--live-rate",
            "0",
            "--seed",
            "11",
        ])
        .env("RAPPORT_WRITE_KEY", &test_keys().write)
        .status()
        .expect("running rapport-demo");
    assert!(status.success(), "rapport-demo failed");
    pipeline.wait_until_caught_up(Duration::from_secs(120));
}

fn read(pipeline: &Pipeline, path: &str) -> Value {
    let (status, body) = get_json_with_key(
        &format!("{}{path}", pipeline.query_url()),
        Some(&test_keys().read),
    );
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// Loads `path`, again while its figures are being gathered (the page
/// says so, and would reload itself), insists nothing went wrong, keeps a
/// screenshot.
fn visit(page: &mut Page, base: &str, path: &str, shot: &str) {
    goto_ready(page, &format!("{base}{path}"));
    let problems = page.problems();
    assert!(problems.is_empty(), "{path}: {problems:#?}");
    page.screenshot(&screenshot_dir().join(format!("dashboard-{shot}.png")));
}

fn goto_ready(page: &mut Page, url: &str) {
    for _ in 0..120 {
        page.goto(url);
        if !page.eval_bool("!!document.querySelector('main.gathering')") {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{url} was still gathering its figures after 30 s");
}

fn log_in(page: &mut Page, base: &str, key: &str) {
    page.goto(&format!("{base}/ui/login"));
    page.fill("#key", key);
    page.submit("form.login");
    assert!(
        page.url().ends_with("/ui/"),
        "logging in lands on the overview, not {}",
        page.url()
    );
}

#[test]
fn an_analyst_finds_people_from_the_overview_to_their_first_event() {
    let pipeline = Pipeline::start("dashboard");
    feed_demo(&pipeline);
    let base = pipeline.query_url();
    let browser = Browser::launch();
    let mut page = browser.new_page();

    // Without a key, a page is the login form (401); with a read key, the overview.
    page.goto(&format!("{base}/ui/churn"));
    assert!(page.eval_bool("!!document.querySelector('form.login')"));
    page.clear_problems();
    log_in(&mut page, &base, &test_keys().read);
    visit(&mut page, &base, "/ui/", "overview");
    assert_eq!(page.url(), format!("{base}/ui/"));

    // The grid: 25 cells whose counts add up to the people with an RFM score.
    let cells = page.eval_json(
        "Array.from(document.querySelectorAll('#rfm-grid td[data-r]')).map(cell => \
         [Number(cell.dataset.r), Number(cell.dataset.fm), Number(cell.querySelector('a').dataset.value)])",
    );
    let cells: Vec<(u8, u8, u64)> = serde_json::from_value(cells).expect("cells");
    assert_eq!(cells.len(), 25);
    let segments = read(&pipeline, "/v1/segments");
    let scored: u64 = segments["rfm"]
        .as_object()
        .expect("rfm counts")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert!(scored > 0, "the demo has buyers");
    assert_eq!(cells.iter().map(|(_, _, count)| count).sum::<u64>(), scored);

    // Clicking a cell lists exactly its people: as many, each with that R and FM.
    let (r, fm, count) = cells
        .iter()
        .copied()
        .filter(|(_, _, count)| (1..=50).contains(count))
        .min_by_key(|(_, _, count)| *count)
        .expect("a cell with 1 to 50 people");
    page.click(&format!("#rfm-grid td[data-r='{r}'][data-fm='{fm}'] a"));
    assert!(page.problems().is_empty(), "{:#?}", page.problems());
    let listed = page.eval_json(
        "Array.from(document.querySelectorAll('#people tbody a[href^=\"/ui/customers/\"]')).map(a => decodeURIComponent(a.getAttribute('href').slice(14)))",
    );
    let listed: Vec<String> = serde_json::from_value(listed).expect("ids");
    assert_eq!(listed.len() as u64, count, "cell R {r} × FM {fm}");
    for id in &listed {
        let scores = read(&pipeline, &format!("/v1/customers/{id}/scores"));
        let rfm = &scores["rfm"];
        let (f, m) = (rfm["f"].as_u64().unwrap(), rfm["m"].as_u64().unwrap());
        assert_eq!(rfm["r"], u64::from(r), "{id}: {scores}");
        assert_eq!((f + m).div_ceil(2), u64::from(fm), "{id}: {scores}");
    }
    page.screenshot(&screenshot_dir().join("dashboard-rfm-cell.png"));

    for (path, shot) in [
        ("/ui/churn", "churn"),
        ("/ui/segments", "segments"),
        ("/ui/models", "models"),
        ("/ui/cohorts", "cohorts"),
        ("/ui/campaigns", "campaigns"),
        ("/ui/people?filter=buyers", "people"),
    ] {
        visit(&mut page, &base, path, shot);
    }
    // The retention triangle is a heat map: a full cohort's cell is shaded.
    page.goto(&format!("{base}/ui/cohorts"));
    let shades = page.eval_json(
        "Array.from(document.querySelectorAll('#cohorts td[class*=heat-]')).map(cell => [cell.className, getComputedStyle(cell).backgroundColor])",
    );
    assert!(
        shades
            .as_array()
            .expect("cells")
            .iter()
            .any(|shade| shade[1] != "rgba(0, 0, 0, 0)" && shade[1] != "rgb(255, 255, 255)"),
        "{shades}"
    );
    // The models page draws its two charts, then loads the validation,
    // which draws two more when the calibration period holds enough
    // buyers to fit, and says why not otherwise.
    goto_ready(&mut page, &format!("{base}/ui/models"));
    wait_for(
        "the models page's validation",
        Duration::from_secs(60),
        || {
            !page.eval_bool(
            "document.querySelector('#validation-results').textContent.includes('Fitting both models')",
        )
        },
    );
    let validation_charts =
        page.eval_i64("document.querySelectorAll('#validation-results div.chart').length");
    if validation_charts == 0 {
        let reason = page.eval_string("document.querySelector('#validation-results').textContent");
        assert!(reason.contains("Not validated"), "{reason}");
    }
    assert_eq!(
        page.eval_i64("document.querySelectorAll('.chart canvas').length"),
        2 + validation_charts
    );
    assert!(page.problems().is_empty(), "{:#?}", page.problems());

    // The campaigns page lists the demo's campaigns with the API's figures,
    // and each links to its breakdown.
    let campaigns = read(&pipeline, "/v1/campaigns");
    let first = &campaigns["campaigns"][0];
    let id = first["campaign_id"]
        .as_str()
        .expect("the demo mails campaigns");
    goto_ready(&mut page, &format!("{base}/ui/campaigns"));
    let sent = page.eval_string(&format!(
        "document.querySelector('#campaigns a[href=\"/ui/campaigns/{id}\"]').closest('tr').children[3].textContent"
    ));
    assert_eq!(
        sent.replace('\u{202f}', ""),
        first["sent"].to_string(),
        "{campaigns}"
    );
    visit(&mut page, &base, &format!("/ui/campaigns/{id}"), "campaign");
    assert!(page.eval_bool("!!document.querySelector('#by-rfm tbody tr')"));

    // A guest who ordered by email, then registered (the demo's guest
    // orders are `g-<index>`): search by that email finds one person, whose
    // orders include the guest order, on a merged profile.
    let registered_with_merges = (0..CUSTOMERS).filter(|index| {
        let (status, person) = get_json_with_key(
            &format!("{base}/v1/customers?email=user{index}%40example.com"),
            Some(&test_keys().read),
        );
        status == 200
            && person["identifiers"]["customer_id"].is_array()
            && person["merged_ids"]
                .as_array()
                .is_some_and(|merged| !merged.is_empty())
    });
    let mut found = None;
    for index in registered_with_merges.take(60) {
        page.goto(&format!("{base}/ui/"));
        page.fill(
            "form.search input[name=q]",
            &format!("user{index}@example.com"),
        );
        page.submit("form.search");
        assert!(page.url().contains("/ui/customers/"), "{}", page.url());
        let guest_order = page.eval_string(&format!(
            "Array.from(document.querySelectorAll('#orders tbody tr')).filter(row => row.cells[0].textContent === 'g-{index}').map(row => row.cells[5].textContent).join()"
        ));
        if !guest_order.is_empty() {
            found = Some((index, guest_order));
            break;
        }
    }
    let (guest, guest_order) = found.expect("a guest who registered later");
    assert!(
        guest_order.contains("(merged)"),
        "g-{guest}: {guest_order:?}"
    );
    assert!(page.problems().is_empty(), "{:#?}", page.problems());
    page.screenshot(&screenshot_dir().join("dashboard-customer.png"));

    // The timeline pages back to the first event.
    let mut pages = 1;
    while page.eval_bool("!!document.querySelector('#timeline-body a.older')") {
        page.click("#timeline-body a.older");
        pages += 1;
        assert!(pages < 100, "the timeline never ends");
    }
    assert!(page.eval_bool("!!document.querySelector('#timeline-body tr.end')"));
    let oldest = page.eval_string(
        "Array.from(document.querySelectorAll('#timeline-body tr.event')).pop().cells[0].textContent",
    );
    let customer_id = page.eval_string("decodeURIComponent(location.pathname.slice(14))");
    let person = read(&pipeline, &format!("/v1/customers/{customer_id}"));
    assert_eq!(oldest, person["first_seen"].as_str().expect("first_seen"));
    let events: u64 = person["event_counts"]
        .as_object()
        .expect("event counts")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(
        page.eval_i64("document.querySelectorAll('#timeline-body tr.event').length") as u64,
        events
    );
    assert!(page.problems().is_empty(), "{:#?}", page.problems());

    // A read key cannot open the ops page; an admin key can.
    page.goto(&format!("{base}/ui/ops"));
    assert!(
        page.problems()
            .iter()
            .any(|problem| problem.contains("403")),
        "{:#?}",
        page.problems()
    );
    assert!(
        page.eval_string("document.body.textContent")
            .contains("admin")
    );
    page.clear_problems();
    page.submit("form.logout");
    log_in(&mut page, &base, &test_keys().admin);
    visit(&mut page, &base, "/ui/ops", "ops");
    assert!(
        page.eval_i64("document.querySelectorAll('table[id^=partitions-] tbody tr').length") > 0
    );

    // On a tablet, the overview fits the width.
    page.set_viewport(800, 1100);
    visit(&mut page, &base, "/ui/", "overview-tablet");
    assert!(page.eval_bool("document.documentElement.scrollWidth <= window.innerWidth + 1"));
}
