//! `rapportctl import`: a shop's order and customer history from CSV,
//! through the real ingest, identity and projector. Bad rows go to the
//! rejects file with their line and reason; a second run of the same file
//! adds nothing.

use std::fmt::Write as _;
use std::time::Duration;

use rapport_e2e::Pipeline;

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
    text.push_str("bad@example.com,c-bad,Bad Date,31/12/2009,\n");
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
