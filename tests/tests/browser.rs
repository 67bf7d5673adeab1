//! The DevTools driver against a tiny site of its own: clicks, links,
//! forms, XHRs and the problems a page reports, in Debian's headless
//! Chromium.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use rapport_e2e::browser::{Browser, screenshot_dir};

/// What `/data` answers, late enough that a driver that does not wait for
/// requests in flight would miss it.
const DATA: &str = "forty-two customers";

const HOME: &str = r#"<!doctype html>
<html><head><title>Home</title><link rel="icon" href="data:,"></head>
<body>
<h1>Rapport browser test</h1>
<p><a id="next" href="/second">Second page</a></p>
<p><button id="load" onclick="load()">Load data</button></p>
<div id="out"></div>
<div id="after-load"></div>
<form id="search" action="/second" method="get">
  <input id="query" name="q"> <button>Search</button>
</form>
<script>
function load() {
  const request = new XMLHttpRequest();
  request.open("GET", "/data");
  request.onload = () => { document.getElementById("out").textContent = request.responseText; };
  request.send();
}
// As htmx's hx-trigger="load" does: a request a moment after the load event.
window.addEventListener("load", () => setTimeout(() => {
  fetch("/data").then((response) => response.text())
    .then((text) => { document.getElementById("after-load").textContent = text; });
}, 50));
</script>
</body></html>"#;

const SECOND: &str = r#"<!doctype html>
<html><head><title>Second</title><link rel="icon" href="data:,"></head>
<body><h1>The second page</h1></body></html>"#;

const BROKEN: &str = r#"<!doctype html>
<html><head><title>Broken</title><link rel="icon" href="data:,"></head>
<body><h1>A broken page</h1>
<script>console.error("boom");</script>
<img src="/missing.png" alt="missing">
</body></html>"#;

/// The site's address; one server for every test of this file.
fn site() -> &'static str {
    static SITE: OnceLock<String> = OnceLock::new();
    SITE.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test site");
        let address = format!("http://{}", listener.local_addr().expect("address"));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                // Chromium opens spare connections it may never use: one
                // thread each, so that none blocks the rest.
                std::thread::spawn(move || serve(stream));
            }
        });
        address
    })
}

/// Answers one HTTP/1.1 request and closes the connection.
fn serve(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or(target);
    let (status, content_type, body) = match path {
        "/" => ("200 OK", "text/html", HOME),
        "/second" => ("200 OK", "text/html", SECOND),
        "/broken" => ("200 OK", "text/html", BROKEN),
        "/data" => {
            std::thread::sleep(Duration::from_millis(200));
            ("200 OK", "text/plain", DATA)
        }
        _ => ("404 Not Found", "text/plain", "not found"),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
}

#[test]
fn a_page_is_driven_like_a_user() {
    let browser = Browser::launch();
    let mut page = browser.new_page();
    let home = format!("{}/", site());

    page.goto(&home);
    assert_eq!(page.problems(), Vec::<String>::new());
    assert_eq!(page.eval_string("document.title"), "Home");
    assert_eq!(
        page.eval_string("document.getElementById('after-load').textContent"),
        DATA,
        "goto waits for the requests that follow the load event"
    );
    assert_eq!(page.eval_i64("window.innerWidth"), 1280);

    page.click("#load");
    assert_eq!(
        page.eval_string("document.getElementById('out').textContent"),
        DATA
    );
    let screenshot = screenshot_dir().join("browser-home.png");
    page.screenshot(&screenshot);
    let png = std::fs::read(&screenshot).expect("read the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 5_000, "a {} byte screenshot", png.len());

    page.click("#next");
    assert!(page.url().ends_with("/second"), "{}", page.url());
    assert_eq!(page.eval_string("document.title"), "Second");

    page.goto(&home);
    page.fill("#query", "rapport test");
    page.submit("#search");
    assert!(
        page.url().ends_with("/second?q=rapport+test"),
        "{}",
        page.url()
    );
    assert_eq!(
        page.eval_string("new URLSearchParams(location.search).get('q')"),
        "rapport test"
    );

    page.set_viewport(768, 1024);
    assert_eq!(page.eval_i64("window.innerWidth"), 768);
    assert!(page.eval_bool("window.innerHeight === 1024"));
    assert_eq!(page.problems(), Vec::<String>::new());
}

#[test]
fn problems_name_what_went_wrong() {
    let browser = Browser::launch();
    let mut page = browser.new_page();
    let broken = format!("{}/broken", site());

    page.goto(&broken);
    let problems = page.problems();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems
            .iter()
            .any(|problem| problem.contains("console.error") && problem.contains("boom")),
        "{problems:#?}"
    );
    assert!(
        problems.iter().any(|problem| problem.contains("404")
            && problem.contains(&format!("{}/missing.png", site()))),
        "{problems:#?}"
    );

    page.clear_problems();
    assert_eq!(page.problems(), Vec::<String>::new());

    let thrown = page
        .try_eval_json("throw new Error('nope')")
        .expect_err("the script throws");
    assert!(thrown.contains("nope"), "{thrown}");
    page.eval_json("setTimeout(() => { throw new Error('later'); }, 0)");
    page.eval_json("new Promise((resolve) => setTimeout(resolve, 50))");
    let problems = page.problems();
    assert!(
        problems.len() == 1 && problems[0].contains("later"),
        "{problems:#?}"
    );
}

#[test]
#[should_panic(expected = "infra/tools.sh installs it")]
fn a_missing_chromium_says_how_to_install_it() {
    Browser::launch_program("/nonexistent/chromium".as_ref());
}
