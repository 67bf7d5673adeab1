//! Drives Debian's headless Chromium over the Chrome DevTools Protocol, for browser tests.
//! Hand-written: CDP crates (headless_chrome) bring a browser fetcher and large trees; tests need a dozen commands.
//!
//! One websocket carries every command; a message loop answers each
//! command by its id and keeps the events it reads meanwhile for the page
//! they belong to. Failures panic with what was being done, like the rest
//! of the harness, and no wait is longer than the page's timeout.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::ErrorKind;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// How long a command, a navigation or a settling page may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// How long no request may be in flight before the network counts as idle:
/// long enough for htmx to issue the requests a load or a swap triggers.
const QUIET: Duration = Duration::from_millis(300);

/// How long Chromium may take to start and say where it listens.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Where screenshots go: `RAPPORT_SCREENSHOTS`, else
/// `<temp dir>/rapport-screenshots`; created, and printed.
pub fn screenshot_dir() -> PathBuf {
    let directory = std::env::var_os("RAPPORT_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("rapport-screenshots"));
    std::fs::create_dir_all(&directory)
        .unwrap_or_else(|error| panic!("creating {}: {error}", directory.display()));
    eprintln!("screenshots go to {}", directory.display());
    directory
}

/// The Chromium to run: `RAPPORT_CHROMIUM`, else `chromium` on the PATH.
fn chromium_program() -> PathBuf {
    std::env::var_os("RAPPORT_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("chromium"))
}

/// A headless Chromium of one test's own, with a fresh profile; killed,
/// and its profile removed, when dropped.
pub struct Browser {
    child: Child,
    connection: Rc<RefCell<Connection>>,
    /// The profile (`profile/`) and Chromium's output (`chromium.log`).
    directory: tempfile::TempDir,
}

impl Browser {
    /// Starts `${RAPPORT_CHROMIUM:-chromium}` headless and connects to it.
    pub fn launch() -> Self {
        Self::launch_program(&chromium_program())
    }

    /// Starts `program` as a headless Chromium and connects to it.
    pub fn launch_program(program: &Path) -> Self {
        let directory = tempfile::tempdir().expect("temp dir");
        let profile = directory.path().join("profile");
        let log_path = directory.path().join("chromium.log");
        let log = std::fs::File::create(&log_path).expect("chromium log");
        let mut child = Command::new(program)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--disable-extensions",
                "--mute-audio",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.display()),
                "--window-size=1280,900",
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("chromium log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run {} ({error}): browser tests need Chromium; install Debian's chromium: infra/tools.sh installs it (RAPPORT_CHROMIUM names another binary)",
                    program.display()
                )
            });
        let connection = wait_for_active_port(&mut child, &profile)
            .and_then(|(port, path)| Connection::open(port, &path));
        let connection = match connection {
            Ok(connection) => connection,
            Err(problem) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{}: {problem}; its output ends:\n{}",
                    program.display(),
                    log_tail(&log_path)
                );
            }
        };
        Self {
            child,
            connection: Rc::new(RefCell::new(connection)),
            directory,
        }
    }

    /// Opens a new tab on `about:blank`, attached and with the page,
    /// runtime, log and network domains enabled.
    pub fn new_page(&self) -> Page {
        let created = self.connection.borrow_mut().call(
            None,
            "Target.createTarget",
            json!({"url": "about:blank"}),
            DEFAULT_TIMEOUT,
        );
        let target = string_at(&created, "/targetId", "Target.createTarget");
        let attached = self.connection.borrow_mut().call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
            DEFAULT_TIMEOUT,
        );
        let session = string_at(&attached, "/sessionId", "Target.attachToTarget");
        self.connection
            .borrow_mut()
            .sessions
            .insert(session.clone(), VecDeque::new());
        let mut page = Page {
            connection: Rc::clone(&self.connection),
            session,
            target,
            timeout: DEFAULT_TIMEOUT,
            activity: Activity::new(String::new(), Instant::now()),
        };
        for domain in ["Page", "Runtime", "Log", "Network"] {
            page.command(&format!("{domain}.enable"), json!({}));
        }
        let tree = page.command("Page.getFrameTree", json!({}));
        page.activity.main_frame = string_at(&tree, "/frameTree/frame/id", "Page.getFrameTree");
        page
    }

    /// Where Chromium's own output goes, for a test that wants to show it.
    pub fn log_path(&self) -> PathBuf {
        self.directory.path().join("chromium.log")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Browser.close lets Chromium end its renderers itself; the kill is
        // for a browser that does not listen any more.
        if let Ok(mut connection) = self.connection.try_borrow_mut() {
            let _ = connection.send(None, "Browser.close", json!({}));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for Chromium to write `DevToolsActivePort` into its profile: the
/// port on the first line, the browser's websocket path on the second.
fn wait_for_active_port(child: &mut Child, profile: &Path) -> Result<(u16, String), String> {
    let file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + LAUNCH_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                let port = port
                    .trim()
                    .parse()
                    .map_err(|_| format!("it wrote {port:?} as its DevTools port"))?;
                return Ok((port, path.trim().to_owned()));
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "it exited ({status}) before it listened for DevTools"
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "it wrote no {} within {LAUNCH_TIMEOUT:?}",
                file.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The `string` at `pointer` in a command's `result`.
fn string_at(result: &Value, pointer: &str, method: &str) -> String {
    result
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{method} answered without {pointer}: {result}"))
        .to_owned()
}

/// The browser's websocket, and the events read from it that a page has
/// not looked at yet.
struct Connection {
    socket: WebSocket<TcpStream>,
    next_id: u64,
    /// Queued events by session; events of other sessions (and the
    /// browser's own) are dropped.
    sessions: HashMap<String, VecDeque<Value>>,
}

/// What one read from the websocket brought.
enum Incoming {
    Response(u64, Result<Value, String>),
    Event,
    Nothing,
}

impl Connection {
    fn open(port: u16, path: &str) -> Result<Self, String> {
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&address, DEFAULT_TIMEOUT)
            .map_err(|error| format!("connecting to Chromium's DevTools at {address}: {error}"))?;
        stream.set_nodelay(true).expect("TCP_NODELAY");
        // A handshake that hangs fails after the timeout, not never.
        stream
            .set_read_timeout(Some(DEFAULT_TIMEOUT))
            .expect("read timeout");
        let url = format!("ws://{address}{path}");
        let (socket, _) = tungstenite::client(url.as_str(), stream)
            .map_err(|error| format!("the DevTools websocket handshake with {url}: {error}"))?;
        Ok(Self {
            socket,
            next_id: 0,
            sessions: HashMap::new(),
        })
    }

    /// Sends a command; its id, or why it could not be sent.
    fn send(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<u64, tungstenite::Error> {
        self.next_id += 1;
        let mut message = json!({"id": self.next_id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket.send(Message::text(message.to_string()))?;
        Ok(self.next_id)
    }

    /// Sends a command and waits up to `timeout` for its answer, keeping the
    /// events read meanwhile.
    fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Value {
        let id = self.send(session, method, params).unwrap_or_else(|error| {
            panic!("sending {method} to Chromium: {error} (did it crash?)")
        });
        let deadline = Instant::now() + timeout;
        loop {
            if Instant::now() >= deadline {
                panic!("Chromium did not answer {method} within {timeout:?}");
            }
            // Answers to commands nobody waits for (clean-ups) are dropped.
            if let Incoming::Response(answered, result) = self.read_one(deadline)
                && answered == id
            {
                return result.unwrap_or_else(|error| panic!("{method}: {error}"));
            }
        }
    }

    /// Reads one message if one comes before `until`, queueing an event.
    fn read_one(&mut self, until: Instant) -> Incoming {
        let wait = until
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        self.socket
            .get_mut()
            .set_read_timeout(Some(wait))
            .expect("read timeout");
        let text = match self.socket.read() {
            Ok(Message::Text(text)) => text,
            Ok(_) => return Incoming::Nothing,
            Err(tungstenite::Error::Io(error))
                if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                return Incoming::Nothing;
            }
            Err(error) => panic!("reading from Chromium's DevTools: {error} (did it crash?)"),
        };
        let message: Value = serde_json::from_str(text.as_str())
            .unwrap_or_else(|error| panic!("DevTools sent no JSON ({error}): {}", text.as_str()));
        if let Some(id) = message.get("id").and_then(Value::as_u64) {
            let result = match message.get("error") {
                Some(error) => Err(error
                    .get("message")
                    .and_then(Value::as_str)
                    .map_or_else(|| error.to_string(), str::to_owned)),
                None => Ok(message.get("result").cloned().unwrap_or(Value::Null)),
            };
            return Incoming::Response(id, result);
        }
        if let Some(queue) = message
            .get("sessionId")
            .and_then(Value::as_str)
            .and_then(|session| self.sessions.get_mut(session))
        {
            queue.push_back(message);
        }
        Incoming::Event
    }
}

/// One tab of a [`Browser`].
pub struct Page {
    connection: Rc<RefCell<Connection>>,
    session: String,
    target: String,
    timeout: Duration,
    activity: Activity,
}

impl Page {
    /// How long a command or a wait may take from now on
    /// ([`DEFAULT_TIMEOUT`] to begin with).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Emulates a screen of `width` × `height` CSS pixels (a tablet, say).
    pub fn set_viewport(&mut self, width: u32, height: u32) {
        self.command(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
    }

    /// Opens `url` and waits for its load event and then for the network
    /// to fall idle.
    pub fn goto(&mut self, url: &str) {
        self.activity.expect_action(Instant::now());
        let navigated = self.command("Page.navigate", json!({"url": url}));
        if let Some(error) = navigated.get("errorText").and_then(Value::as_str) {
            panic!("navigating to {url}: {error}");
        }
        self.wait_until(&format!("{url} to load"), |activity, now| {
            activity.loaded() && activity.network_idle(now)
        });
    }

    /// Evaluates `script` (awaiting a promise it returns) and returns its
    /// value as JSON, or what it threw.
    pub fn try_eval_json(&mut self, script: &str) -> Result<Value, String> {
        let answer = self.command(
            "Runtime.evaluate",
            json!({"expression": script, "returnByValue": true, "awaitPromise": true, "userGesture": true}),
        );
        if let Some(details) = answer.get("exceptionDetails") {
            return Err(describe_exception(details));
        }
        let result = &answer["result"];
        Ok(match result.get("unserializableValue") {
            Some(unserializable) => unserializable.clone(),
            None => result.get("value").cloned().unwrap_or(Value::Null),
        })
    }

    /// [`Page::try_eval_json`], failing the test if the script throws.
    pub fn eval_json(&mut self, script: &str) -> Value {
        self.try_eval_json(script)
            .unwrap_or_else(|error| panic!("the script `{script}` threw {error}"))
    }

    pub fn eval_string(&mut self, script: &str) -> String {
        match self.eval_json(script) {
            Value::String(text) => text,
            other => panic!("`{script}` gave {other}, not a string"),
        }
    }

    pub fn eval_i64(&mut self, script: &str) -> i64 {
        let value = self.eval_json(script);
        value
            .as_i64()
            .unwrap_or_else(|| panic!("`{script}` gave {value}, not an integer"))
    }

    pub fn eval_bool(&mut self, script: &str) -> bool {
        let value = self.eval_json(script);
        value
            .as_bool()
            .unwrap_or_else(|| panic!("`{script}` gave {value}, not a boolean"))
    }

    /// Clicks the first element matching `selector`, then waits for the
    /// navigation it started (if any) to load and for the network to fall
    /// idle.
    pub fn click(&mut self, selector: &str) {
        self.act(
            selector,
            "click",
            "(element) => { element.click(); return true; }",
        );
    }

    /// Sets the value of the input matching `selector` to `text` and
    /// dispatches an `input` event, as typing would. Waits for nothing.
    pub fn fill(&mut self, selector: &str, text: &str) {
        let text = json!(text);
        let found = self.eval_json(&format!(
            "(() => {{ const element = document.querySelector({selector}); if (!element) return false; \
             element.focus(); element.value = {text}; \
             element.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()",
            selector = json!(selector),
        ));
        if found != json!(true) {
            panic!("fill `{selector}` on {}: no element", self.url());
        }
    }

    /// Submits the form matching `selector` as its submit button would
    /// (`requestSubmit`: validation and `submit` handlers run), then waits
    /// like [`Page::click`].
    pub fn submit(&mut self, selector: &str) {
        self.act(
            selector,
            "submit",
            "(element) => { if (!(element instanceof HTMLFormElement)) return 'not a form'; element.requestSubmit(); return true; }",
        );
    }

    /// Runs `action` on the element matching `selector`, then settles.
    fn act(&mut self, selector: &str, name: &str, action: &str) {
        self.activity.expect_action(Instant::now());
        let outcome = self.eval_json(&format!(
            "(() => {{ const element = document.querySelector({selector}); if (!element) return 'no element'; return ({action})(element); }})()",
            selector = json!(selector),
        ));
        if outcome != json!(true) {
            let problem = outcome.as_str().unwrap_or("no element").to_owned();
            panic!("{name} `{selector}` on {}: {problem}", self.url());
        }
        self.wait_until(
            &format!("the page to settle after {name} on `{selector}`"),
            |activity, now| activity.navigation_done() && activity.network_idle(now),
        );
    }

    /// The address the page shows.
    pub fn url(&mut self) -> String {
        self.eval_string("location.href")
    }

    /// Saves a PNG of the viewport to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        use base64::Engine as _;
        let shot = self.command("Page.captureScreenshot", json!({"format": "png"}));
        let data = string_at(&shot, "/data", "Page.captureScreenshot");
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("Page.captureScreenshot answered with no base64");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("screenshot directory");
        }
        std::fs::write(path, png)
            .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
        eprintln!("screenshot: {}", path.display());
    }

    /// Everything that went wrong since the page was created (or
    /// [`Page::clear_problems`]), one readable line each: console errors
    /// and failed assertions, uncaught exceptions, errors logged by the
    /// browser, failed requests and responses of status 400 or more.
    pub fn problems(&mut self) -> Vec<String> {
        self.drain();
        self.activity.problems.clone()
    }

    /// Forgets the problems so far, for a test that expects some.
    pub fn clear_problems(&mut self) {
        self.drain();
        self.activity.problems.clear();
    }

    /// Sends a command of this page's session and returns its result.
    fn command(&mut self, method: &str, params: Value) -> Value {
        let result =
            self.connection
                .borrow_mut()
                .call(Some(&self.session), method, params, self.timeout);
        self.absorb();
        result
    }

    /// Folds this page's queued events into its activity.
    fn absorb(&mut self) {
        let events = self
            .connection
            .borrow_mut()
            .sessions
            .get_mut(&self.session)
            .map(std::mem::take)
            .unwrap_or_default();
        for event in events {
            let method = event["method"].as_str().unwrap_or_default();
            self.activity
                .apply(method, &event["params"], Instant::now());
        }
    }

    /// Reads what has already arrived, without waiting for more.
    fn drain(&mut self) {
        while !matches!(
            self.connection.borrow_mut().read_one(Instant::now()),
            Incoming::Nothing
        ) {}
        self.absorb();
    }

    /// Reads events until `done` holds, failing after the timeout.
    fn wait_until(&mut self, what: &str, done: impl Fn(&Activity, Instant) -> bool) {
        let deadline = Instant::now() + self.timeout;
        loop {
            self.absorb();
            let now = Instant::now();
            if let Some(crash) = &self.activity.crashed {
                panic!("waiting for {what}: {crash}");
            }
            if done(&self.activity, now) {
                return;
            }
            if now >= deadline {
                let in_flight: Vec<&str> = self
                    .activity
                    .in_flight
                    .values()
                    .map(|request| request.url.as_str())
                    .collect();
                panic!(
                    "waited {:?} for {what} in vain (load event seen: {}, requests in flight: {in_flight:?})",
                    self.timeout, self.activity.load_fired
                );
            }
            // Wake up often enough to see the network fall quiet.
            let until = deadline.min(now + Duration::from_millis(50));
            self.connection.borrow_mut().read_one(until);
        }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        if let Ok(mut connection) = self.connection.try_borrow_mut() {
            connection.sessions.remove(&self.session);
            let _ = connection.send(None, "Target.closeTarget", json!({"targetId": self.target}));
        }
    }
}

/// A request the page has sent and not seen end.
struct Request {
    url: String,
    frame: String,
    loader: String,
}

/// What a page's events have said so far: a fold of DevTools events, no
/// I/O.
struct Activity {
    main_frame: String,
    in_flight: HashMap<String, Request>,
    /// Every request's address, to name a failed one.
    urls: HashMap<String, String>,
    /// Requests already reported for their status, so that their failure
    /// is not reported twice.
    reported: HashSet<String>,
    last_network_activity: Instant,
    navigation_started: bool,
    load_fired: bool,
    problems: Vec<String>,
    crashed: Option<String>,
}

impl Activity {
    fn new(main_frame: String, now: Instant) -> Self {
        Self {
            main_frame,
            in_flight: HashMap::new(),
            urls: HashMap::new(),
            reported: HashSet::new(),
            last_network_activity: now,
            navigation_started: false,
            load_fired: false,
            problems: Vec::new(),
            crashed: None,
        }
    }

    /// Before an action: nothing it causes has been seen yet.
    fn expect_action(&mut self, now: Instant) {
        self.navigation_started = false;
        self.load_fired = false;
        self.last_network_activity = now;
    }

    fn loaded(&self) -> bool {
        self.load_fired
    }

    /// No navigation started since the action, or it has loaded.
    fn navigation_done(&self) -> bool {
        !self.navigation_started || self.load_fired
    }

    fn network_idle(&self, now: Instant) -> bool {
        self.in_flight.is_empty() && now.duration_since(self.last_network_activity) >= QUIET
    }

    fn apply(&mut self, method: &str, params: &Value, now: Instant) {
        let text = |pointer: &str| {
            params
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        match method {
            "Network.requestWillBeSent" => {
                self.last_network_activity = now;
                let id = text("/requestId").to_owned();
                let url = text("/request/url").to_owned();
                self.urls.insert(id.clone(), url.clone());
                // An event stream never ends: it must not keep the page busy.
                if text("/type") != "EventSource" {
                    let request = Request {
                        url,
                        frame: text("/frameId").to_owned(),
                        loader: text("/loaderId").to_owned(),
                    };
                    self.in_flight.insert(id, request);
                }
            }
            "Network.responseReceived" => {
                self.last_network_activity = now;
                let status = params
                    .pointer("/response/status")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                if status >= 400 {
                    self.reported.insert(text("/requestId").to_owned());
                    let reason = match text("/response/statusText") {
                        "" => String::new(),
                        reason => format!(" {reason}"),
                    };
                    self.problems
                        .push(format!("HTTP {status}{reason}: {}", text("/response/url")));
                }
            }
            "Network.loadingFinished" => {
                self.last_network_activity = now;
                self.in_flight.remove(text("/requestId"));
            }
            "Network.loadingFailed" => {
                self.last_network_activity = now;
                let id = text("/requestId");
                self.in_flight.remove(id);
                let canceled = params["canceled"].as_bool().unwrap_or(false);
                if !canceled && !self.reported.contains(id) {
                    let url = self.urls.get(id).map_or(id, String::as_str);
                    let blocked = match text("/blockedReason") {
                        "" => String::new(),
                        reason => format!(" (blocked: {reason})"),
                    };
                    self.problems.push(format!(
                        "request failed: {}{blocked}: {url}",
                        text("/errorText")
                    ));
                }
            }
            "Page.frameRequestedNavigation" | "Page.frameStartedLoading"
                if text("/frameId") == self.main_frame =>
            {
                self.navigation_started = true;
            }
            "Page.frameNavigated" => {
                let frame = text("/frame/id");
                if frame == self.main_frame {
                    self.navigation_started = true;
                    // The old document's requests end with it, reported or not.
                    let loader = text("/frame/loaderId");
                    self.in_flight
                        .retain(|_, request| request.frame != frame || request.loader == loader);
                }
            }
            "Page.loadEventFired" | "Page.domContentEventFired" => {
                // htmx sends its load-triggered requests right after.
                self.last_network_activity = now;
                if method == "Page.loadEventFired" {
                    self.load_fired = true;
                }
            }
            // A navigation that ends without a new document (204, a
            // download) stops loading without a load event.
            "Page.frameStoppedLoading"
                if text("/frameId") == self.main_frame && self.navigation_started =>
            {
                self.load_fired = true;
            }
            "Runtime.consoleAPICalled" => {
                let kind = text("/type");
                if kind == "error" || kind == "assert" {
                    let arguments: Vec<String> = params["args"]
                        .as_array()
                        .map(|arguments| arguments.iter().map(describe_remote_object).collect())
                        .unwrap_or_default();
                    let place = params
                        .pointer("/stackTrace/callFrames/0")
                        .map(describe_place)
                        .unwrap_or_default();
                    self.problems
                        .push(format!("console.{kind}: {}{place}", arguments.join(" ")));
                }
            }
            "Runtime.exceptionThrown" => {
                self.problems.push(format!(
                    "uncaught exception: {}",
                    describe_exception(&params["exceptionDetails"])
                ));
            }
            // The network's own errors ("Failed to load resource") are
            // reported above, with the status and address.
            "Log.entryAdded"
                if text("/entry/level") == "error" && text("/entry/source") != "network" =>
            {
                let url = match text("/entry/url") {
                    "" => String::new(),
                    url => format!(" ({url})"),
                };
                self.problems.push(format!(
                    "browser error ({}): {}{url}",
                    text("/entry/source"),
                    text("/entry/text")
                ));
            }
            "Inspector.targetCrashed" => {
                self.crashed = Some("the page crashed".to_owned());
                self.problems.push("the page crashed".to_owned());
            }
            "Inspector.detached" => {
                self.crashed = Some(format!(
                    "DevTools detached from the page: {}",
                    text("/reason")
                ));
            }
            _ => {}
        }
    }
}

/// A console argument as the console would show it.
fn describe_remote_object(object: &Value) -> String {
    match object.get("value") {
        Some(Value::String(text)) => text.clone(),
        Some(value) => value.to_string(),
        None => object
            .get("description")
            .or_else(|| object.get("unserializableValue"))
            .or_else(|| object.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned(),
    }
}

/// ` (url:line)` of a call frame or exception, lines counted from 1.
fn describe_place(place: &Value) -> String {
    match place.get("url").and_then(Value::as_str) {
        Some(url) if !url.is_empty() => {
            let line = place.get("lineNumber").and_then(Value::as_i64).unwrap_or(0) + 1;
            format!(" ({url}:{line})")
        }
        _ => String::new(),
    }
}

/// A thrown exception: its message (and stack) and where it was thrown.
fn describe_exception(details: &Value) -> String {
    // The description's first line is the message; the rest, the stack.
    let thrown = details
        .pointer("/exception/description")
        .and_then(Value::as_str)
        .or_else(|| details.get("text").and_then(Value::as_str))
        .and_then(|description| description.lines().next())
        .unwrap_or("an exception");
    format!("{thrown}{}", describe_place(details))
}
