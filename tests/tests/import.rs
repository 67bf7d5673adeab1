//! `rapportctl import`: a shop's order and customer history from CSV,
//! through the real ingest, identity and projector. Bad rows go to the
//! rejects file with their line and reason; a second run of the same file
//! adds nothing; an import killed midway and resumed sends every order
//! once; a line-item file shaped like UCI Online Retail becomes orders and
//! refunds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rapport_e2e::{Pipeline, bin_dir, test_keys};
use serde_json::Value;

const CUSTOMERS: usize = 40;
const ORDERS_EACH: usize = 5;

#[test]
fn an_order_history_is_imported_once_with_its_bad_rows_set_aside() {
    let pipeline = Pipeline::start("import");
    let directory = tempfile::tempdir().expect("a directory");
    let customers = directory.path().join("customers.csv");
    let orders = directory.path().join("orders.csv");

    // Customers, columns in a shop's own order, one with a bad date.
    let mut text = String::from("Email,Customer ID,Name,Signed Up At,Tier\n");
    for index in 0..CUSTOMERS {
        writeln!(
            text,
            "user{index}@example.com,c-{index:03},Name {index},2009-03-{:02},gold",
            1 + index % 28
        )
        .unwrap();
    }
    text.push_str("bad@example.com,c-bad,Bad Date,2009-02-30,\n");
    std::fs::write(&customers, text).unwrap();

    // Orders from 2010 and 2011 in dollars, some by email only (guest
    // checkouts), and five bad rows.
    let mut text = String::from("order_id,occurred_at,customer_id,email,total,currency\n");
    for index in 0..CUSTOMERS {
        for number in 0..ORDERS_EACH {
            let (customer, email) = if number == 0 {
                (String::new(), format!("user{index}@example.com"))
            } else {
                (format!("c-{index:03}"), String::new())
            };
            writeln!(
                text,
                "o-{index}-{number},2010-{:02}-{:02} 10:30,{customer},{email},{}.{:02},USD",
                1 + number * 2,
                1 + index % 28,
                10 + index,
                number * 7
            )
            .unwrap();
        }
    }
    text.push_str("o-bad-1,2010-01-01,c-001,,12.345,USD\n"); // three decimals in USD
    text.push_str(",2010-01-01,c-001,,10.00,USD\n"); // no order id
    text.push_str("o-bad-3,yesterday,c-001,,10.00,USD\n"); // no date
    text.push_str("o-bad-4,2010-01-01,,,10.00,USD\n"); // nobody
    text.push_str("o-0-1,2010-01-01,c-000,,10.00,USD\n"); // o-0-1 again
    std::fs::write(&orders, text).unwrap();

    let ingest = pipeline.ingest_url();
    let import = |what: &str, file: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "import",
            what,
            file.to_str().unwrap(),
            "--ingest-url",
            ingest.as_str(),
        ];
        args.extend_from_slice(extra);
        pipeline.rapportctl(&args)
    };

    // A dry run checks every row and sends nothing.
    let said = import("orders", &orders, &["--dry-run"]);
    assert!(
        said.contains(&format!("checked {} rows", CUSTOMERS * ORDERS_EACH + 5)),
        "{said}"
    );
    assert!(said.contains("5 refused"), "{said}");
    assert_eq!(
        pipeline.get("/v1/customers/c-000").0,
        404,
        "a dry run sends nothing"
    );

    let said = import("customers", &customers, &[]);
    assert!(
        said.contains(&format!("{CUSTOMERS} events sent, 1 refused")),
        "{said}"
    );
    let said = import("orders", &orders, &[]);
    assert!(
        said.contains(&format!(
            "{} events sent, 5 refused",
            CUSTOMERS * ORDERS_EACH
        )),
        "{said}"
    );
    let rejects = std::fs::read_to_string(directory.path().join("orders.rejects.csv")).unwrap();
    let lines: Vec<&str> = rejects.lines().collect();
    assert_eq!(lines.len(), 6, "a header and five rows: {rejects}");
    // The rows keep their own columns, to be fixed and imported again.
    assert_eq!(
        lines[0],
        "line,reason,order_id,occurred_at,customer_id,email,total,currency"
    );
    assert!(
        lines[1].ends_with(",o-bad-1,2010-01-01,c-001,,12.345,USD"),
        "{}",
        lines[1]
    );
    let first_bad = CUSTOMERS * ORDERS_EACH + 2;
    for (offset, reason) in ["decimals", "order_id", "occurred_at", "whose", "line 3"]
        .iter()
        .enumerate()
    {
        let line = lines[offset + 1];
        assert!(
            line.starts_with(&format!("{},", first_bad + offset)),
            "{line}"
        );
        assert!(line.contains(reason), "{line} should say {reason}");
    }

    // Each customer is one person with their five orders, the guest one
    // merged in, and the attribute from the extra column.
    let wait = Duration::from_secs(90);
    let person = pipeline.wait_for_json("/v1/customers/c-007", wait, |person| {
        person["orders"]["count"] == ORDERS_EACH as u64
    });
    assert_eq!(person["profile"]["name"], "Name 7");
    assert_eq!(person["attributes"]["tier"], "gold");
    let first_seen = person["first_seen"].as_str().unwrap_or("");
    assert!(first_seen.starts_with("2009-03-08T00:00:00"), "{person}");
    // 17 + 17.07 + 17.14 + 17.21 + 17.28 dollars
    assert_eq!(person["orders"]["net_spend_minor"]["USD"], 8_570);

    // Imported again, nothing changes.
    let said = import("orders", &orders, &[]);
    assert!(said.contains("5 refused"), "{said}");
    pipeline.wait_until_caught_up(wait);
    for index in [0, 7, CUSTOMERS - 1] {
        let (status, person) = pipeline.get(&format!("/v1/customers/c-{index:03}"));
        assert_eq!(status, 200);
        assert_eq!(person["orders"]["count"], ORDERS_EACH as u64, "{person}");
    }
}

/// Customers of the resumed import, each with many orders, so that the
/// projection is checked with few requests.
const RESUMED_CUSTOMERS: usize = 100;
const RESUMED_ORDERS_EACH: usize = 1_000;
/// A bad row after every this many good ones.
const BAD_EVERY: usize = 2_000;

/// A bad orders row of kind `kind` (0-9), and what its reason says.
fn bad_row(kind: usize, number: usize) -> (String, &'static str) {
    let long_id = "x".repeat(129);
    match kind {
        0 => (
            format!("b-{number},2010-01-01,c-001,12.345,USD"),
            "decimals",
        ),
        1 => (
            ",2010-01-01,c-001,10.00,USD".to_owned(),
            "order_id is empty",
        ),
        2 => (
            format!("b-{number},yesterday,c-001,10.00,USD"),
            "occurred_at",
        ),
        3 => (
            format!("b-{number},2010-01-01,,10.00,USD"),
            "nothing says whose",
        ),
        // An order of the first customer's again.
        4 => (
            format!("r-0-{number},2010-01-01,c-000,10.00,USD"),
            "repeats the row on line",
        ),
        5 => (
            format!("b-{number},2010-01-01,c-001,-5.00,USD"),
            "must not be negative",
        ),
        6 => (format!("b-{number},2010-01-01,c-001,10.00,US"), "ISO 4217"),
        7 => (
            format!("b-{number},2010-01-01,c-001,twelve,USD"),
            "not a decimal number",
        ),
        8 => (
            format!("b-{number},2010-02-30,c-001,10.00,USD"),
            "no such date",
        ),
        _ => (
            format!("{long_id},2010-01-01,c-001,10.00,USD"),
            "at most 128 bytes",
        ),
    }
}

/// The first two fields of a rejects row: the line, and the reason (which
/// the CSV writer quotes when it holds a comma or a quote).
fn line_and_reason(row: &str) -> (usize, String) {
    let (line, rest) = row.split_once(',').expect("a line number");
    let reason = match rest.strip_prefix('"') {
        Some(quoted) => {
            let mut reason = String::new();
            let mut characters = quoted.chars().peekable();
            while let Some(character) = characters.next() {
                match character {
                    '"' if characters.peek() == Some(&'"') => {
                        reason.push('"');
                        characters.next();
                    }
                    '"' => break,
                    other => reason.push(other),
                }
            }
            reason
        }
        None => rest.split(',').next().unwrap_or("").to_owned(),
    };
    (line.parse().expect("a line number"), reason)
}

/// The checkpoint's line, and whether it says the import finished.
fn checkpoint(path: &Path) -> Option<(u64, bool)> {
    let state: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some((
        state["through_line"].as_u64()?,
        state["finished"].as_bool()?,
    ))
}

#[test]
fn an_import_killed_midway_resumes_and_sends_every_order_once() {
    let pipeline = Pipeline::start("import-resume");
    let directory = tempfile::tempdir().expect("a directory");
    let orders = directory.path().join("orders.csv");
    let state = directory.path().join("orders.csv.import-state");

    // 100 000 orders of 100 customers, cents varying with the order, and
    // a bad row (of ten kinds in turn) after every 2 000 good ones.
    let mut text = String::from("order_id,occurred_at,customer_id,total,currency\n");
    let mut line = 1;
    let mut bad: BTreeMap<usize, &'static str> = BTreeMap::new();
    let mut expected_spend = vec![0_i64; RESUMED_CUSTOMERS];
    for number in 0..RESUMED_ORDERS_EACH {
        for (customer, spend) in expected_spend.iter_mut().enumerate() {
            let good = number * RESUMED_CUSTOMERS + customer;
            let cents = 500 + (good % 997) as i64;
            *spend += cents;
            line += 1;
            writeln!(
                text,
                "r-{customer}-{number},2010-{:02}-{:02} 10:{:02},c-{customer:03},{}.{:02},USD",
                1 + number % 12,
                1 + number % 28,
                customer % 60,
                cents / 100,
                cents % 100
            )
            .unwrap();
            if (good + 1).is_multiple_of(BAD_EVERY) {
                let (row, reason) = bad_row(bad.len() % 10, bad.len());
                line += 1;
                text.push_str(&row);
                text.push('\n');
                bad.insert(line, reason);
            }
        }
    }
    assert_eq!(bad.len(), 50);
    let last_line = line;
    std::fs::write(&orders, text).unwrap();

    // Started, and killed (SIGKILL) once the checkpoint shows progress but
    // well before the end.
    let ingest = pipeline.ingest_url();
    let mut import = Command::new(bin_dir().join("rapportctl"))
        .arg("--config")
        .arg(pipeline.dir.path().join("rapport.toml"))
        .args(["import", "orders", orders.to_str().unwrap()])
        .args(["--ingest-url", &ingest, "--batch", "250", "--parallel", "2"])
        .env("RAPPORT_KEY", &test_keys().admin)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rapportctl");
    let deadline = Instant::now() + Duration::from_secs(60);
    let killed_at = loop {
        if let Some((through_line, finished)) = checkpoint(&state) {
            assert!(
                !finished,
                "the import finished before it could be killed: make the file longer"
            );
            if through_line >= 10_000 {
                import.kill().expect("kill rapportctl");
                break through_line;
            }
        }
        assert!(
            import.try_wait().unwrap().is_none(),
            "rapportctl stopped on its own"
        );
        assert!(Instant::now() < deadline, "no progress in the checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    };
    import.wait().unwrap();
    let (after_kill, finished) = checkpoint(&state).expect("a checkpoint");
    assert!(!finished && after_kill >= killed_at && after_kill < last_line as u64);

    let said = pipeline.rapportctl(&[
        "import",
        "orders",
        orders.to_str().unwrap(),
        "--ingest-url",
        &ingest,
        "--resume",
    ]);
    assert!(
        said.contains(&format!("resuming after line {after_kill} of")),
        "{said}"
    );
    let refused_before = bad.range(..=after_kill as usize).count();
    assert!(
        said.contains(&format!("({refused_before} refused, kept in")),
        "{said}"
    );
    assert!(
        said.contains(&format!("{} refused", 50 - refused_before)),
        "{said}"
    );
    assert_eq!(checkpoint(&state), Some((last_line as u64, true)));

    // Each bad row once in the rejects file, with its reason.
    let rejects = std::fs::read_to_string(directory.path().join("orders.rejects.csv")).unwrap();
    let mut refused: BTreeMap<usize, String> = BTreeMap::new();
    for row in rejects.lines().skip(1) {
        let (line, reason) = line_and_reason(row);
        assert!(
            refused.insert(line, reason).is_none(),
            "line {line} refused twice"
        );
    }
    assert_eq!(
        refused.keys().collect::<Vec<_>>(),
        bad.keys().collect::<Vec<_>>()
    );
    for (line, reason) in &refused {
        assert!(reason.contains(bad[line]), "line {line}: {reason:?}");
    }

    // Every good order in the projection once: each customer's count and
    // spend are theirs exactly.
    pipeline.wait_until_caught_up(Duration::from_secs(180));
    for (customer, spend) in expected_spend.iter().enumerate() {
        let (status, person) = pipeline.get(&format!("/v1/customers/c-{customer:03}"));
        assert_eq!(status, 200, "{person}");
        assert_eq!(
            person["orders"]["count"], RESUMED_ORDERS_EACH as u64,
            "c-{customer:03}"
        );
        assert_eq!(
            person["orders"]["net_spend_minor"]["USD"], *spend,
            "c-{customer:03}"
        );
    }

    // Resumed again, a finished import has nothing left to send.
    let said = pipeline.rapportctl(&[
        "import",
        "orders",
        orders.to_str().unwrap(),
        "--ingest-url",
        &ingest,
        "--resume",
    ]);
    assert!(said.contains("finished already"), "{said}");
    // A file changed since is refused, not resumed.
    let mut changed = std::fs::read_to_string(&orders).unwrap();
    changed.push_str("r-extra,2010-01-01,c-000,1.00,USD\n");
    std::fs::write(&orders, changed).unwrap();
    let (ok, said) = pipeline.try_rapportctl(&[
        "import",
        "orders",
        orders.to_str().unwrap(),
        "--ingest-url",
        &ingest,
        "--resume",
    ]);
    assert!(
        !ok && said.contains("changed since the checkpoint"),
        "{said}"
    );
}

#[test]
fn a_uci_online_retail_file_imports_with_one_command() {
    let pipeline = Pipeline::start("import-uci");
    let directory = tempfile::tempdir().expect("a directory");
    let file = directory.path().join("Online Retail.csv");
    // The data set's own columns and date form (month first: 12/13/2010
    // says so); one invoice with no customer, one cancellation.
    std::fs::write(
        &file,
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n\
         536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850,United Kingdom\n\
         536365,71053,WHITE METAL LANTERN,6,12/1/2010 8:26,3.39,17850,United Kingdom\n\
         536366,22633,HAND WARMER UNION JACK,6,12/1/2010 8:28,1.85,17850,United Kingdom\n\
         536366,22632,HAND WARMER RED POLKA DOT,6,12/1/2010 8:28,1.85,17850,United Kingdom\n\
         536367,84879,ASSORTED COLOUR BIRD ORNAMENT,32,12/1/2010 8:34,1.69,13047,United Kingdom\n\
         C536379,85123A,WHITE HANGING HEART T-LIGHT HOLDER,-2,12/1/2010 9:41,2.55,17850,United Kingdom\n\
         536380,22961,JAM MAKING SET PRINTED,24,12/1/2010 9:41,1.45,,United Kingdom\n\
         536381,22139,RETROSPOT TEA SET CERAMIC 11 PC,1,12/13/2010 9:45,4.95,17850,United Kingdom\n",
    )
    .unwrap();
    let said = pipeline.rapportctl(&[
        "import",
        "order-lines",
        file.to_str().unwrap(),
        "--currency",
        "GBP",
        "--ingest-url",
        &pipeline.ingest_url(),
    ]);
    assert!(said.contains("read as month/day/year"), "{said}");
    // Four orders and one refund; the line without a customer refused.
    assert!(said.contains("5 events sent, 1 refused"), "{said}");
    let rejects =
        std::fs::read_to_string(directory.path().join("Online Retail.rejects.csv")).unwrap();
    let lines: Vec<&str> = rejects.lines().collect();
    assert_eq!(lines.len(), 2, "{rejects}");
    assert!(
        lines[1].starts_with("8,\"no customer") && lines[1].contains(",536380,22961,"),
        "{}",
        lines[1]
    );

    // 6 × 2.55 + 6 × 3.39 + 12 × 1.85 + 4.95 pounds, less 2 × 2.55 returned.
    let person = pipeline.wait_for_json("/v1/customers/17850", Duration::from_secs(90), |person| {
        person["orders"]["count"] == 3 && person["orders"]["net_spend_minor"]["GBP"] == 5_769
    });
    assert_eq!(person["orders"]["cancelled"], 0);
    assert!(
        person["orders"]["first_order_at"]
            .as_str()
            .unwrap_or("")
            .starts_with("2010-12-01T08:26:00"),
        "{person}"
    );
    assert!(
        person["orders"]["last_order_at"]
            .as_str()
            .unwrap_or("")
            .starts_with("2010-12-13T09:45:00"),
        "{person}"
    );
    pipeline.wait_for_json("/v1/customers/13047", Duration::from_secs(30), |person| {
        person["orders"]["count"] == 1 && person["orders"]["net_spend_minor"]["GBP"] == 5_408
    });
}
