//! A harness for end-to-end tests: the real service binaries, started as
//! processes, against the real broker that `make test` starts.
//!
//! Every test gets its own topics (unique names) and data directories, so
//! tests run in parallel against one broker without seeing each other.

pub mod browser;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rapport_common::config::KafkaConfig;
pub use rapport_common::topics::Role;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

thread_local! {
    /// A test that runs its own broker points this thread's harness at it.
    static PRIVATE_BROKERS: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    /// And, for a broker behind TLS, the client properties that reach it.
    static PRIVATE_PROPERTIES: std::cell::RefCell<BTreeMap<String, String>> = const { std::cell::RefCell::new(BTreeMap::new()) };
}

/// librdkafka properties every client of this thread's harness needs (none
/// but for a broker behind TLS).
pub fn kafka_properties() -> BTreeMap<String, String> {
    PRIVATE_PROPERTIES.with(|cell| cell.borrow().clone())
}

/// The broker `make test` started (or this test's private one). Missing it
/// is a failure, never a skip.
pub fn brokers() -> String {
    if let Some(private) = PRIVATE_BROKERS.with(|cell| cell.borrow().clone()) {
        return private;
    }
    std::env::var("RAPPORT_TEST_BROKERS").unwrap_or_else(|_| {
        panic!("RAPPORT_TEST_BROKERS is not set: end-to-end tests need the broker that `make test` starts; run them with `make test`")
    })
}

/// `"key" = "value", …` for a TOML inline table (Rust's debug quoting is
/// TOML's basic string for these).
fn toml_pairs(pairs: &BTreeMap<String, String>) -> String {
    pairs
        .iter()
        .map(|(key, value)| format!("{key:?} = {value:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs the `openssl` command, failing the test if it fails.
fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl; `make test` installs it");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Makes a self-signed certificate authority called `common_name` in
/// `directory` (`NAME.pem`, `NAME.key`) and returns its certificate.
pub fn certificate_authority(directory: &Path, name: &str, common_name: &str) -> PathBuf {
    let key = directory.join(format!("{name}.key")).display().to_string();
    let certificate = directory.join(format!("{name}.pem"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={common_name}"),
        "-keyout",
        &key,
        "-out",
        &certificate.display().to_string(),
    ]);
    certificate
}

/// A private in-memory tansu that clients reach only over TLS, through
/// `tests/tools/tls_proxy.py` with a certificate from a certificate
/// authority made for the test (tansu 0.6 cannot serve TLS itself: its
/// `--cert` and `--key` refuse to be combined). Points this thread's
/// harness at the proxy, with `security.protocol=SSL` and the authority.
pub struct TlsBroker {
    pub broker: PrivateBroker,
    proxy: Child,
    /// The authority's certificate, for clients that should trust it.
    pub ca: PathBuf,
    /// Where the proxy listens.
    pub address: String,
    certificates: tempfile::TempDir,
}

impl TlsBroker {
    pub fn start() -> Self {
        let certificates = tempfile::tempdir().expect("temp dir");
        let at = |name: &str| certificates.path().join(name).display().to_string();
        let ca = certificate_authority(certificates.path(), "ca", "rapport test authority");
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &at("broker.key"),
            "-out",
            &at("broker.csr"),
        ]);
        std::fs::write(
            certificates.path().join("names.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("write names");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &at("broker.csr"),
            "-CA",
            &at("ca.pem"),
            "-CAkey",
            &at("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &at("names.cnf"),
            "-out",
            &at("broker.pem"),
        ]);
        let proxy_port = free_port();
        let broker = PrivateBroker::start_advertising("memory://tansu/", Some(proxy_port));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/tls_proxy.py");
        let proxy = Command::new("python3")
            .arg(&script)
            .args([
                &proxy_port.to_string(),
                &broker.port.to_string(),
                &at("broker.pem"),
                &at("broker.key"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run python3; `make test` installs it");
        wait_for("the TLS proxy to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", proxy_port)).is_ok()
        });
        let address = format!("127.0.0.1:{proxy_port}");
        PRIVATE_BROKERS.with(|cell| *cell.borrow_mut() = Some(address.clone()));
        PRIVATE_PROPERTIES.with(|cell| {
            *cell.borrow_mut() = BTreeMap::from([
                ("security.protocol".to_owned(), "SSL".to_owned()),
                ("ssl.ca.location".to_owned(), ca.display().to_string()),
            ])
        });
        Self {
            broker,
            proxy,
            ca,
            address,
            certificates,
        }
    }

    /// Where the test's certificates are.
    pub fn certificates(&self) -> &Path {
        self.certificates.path()
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.proxy.kill();
        let _ = self.proxy.wait();
        PRIVATE_PROPERTIES.with(|cell| cell.borrow_mut().clear());
    }
}

/// A tansu broker of one test's own, with SQLite storage so that it keeps
/// its log across a stop and start (for outage tests).
pub struct PrivateBroker {
    dir: tempfile::TempDir,
    port: u16,
    /// The port the broker tells clients to connect to: its own, or a
    /// proxy's in front of it.
    advertised: u16,
    child: Option<Child>,
    storage: &'static str,
}

impl PrivateBroker {
    /// Starts the broker and points this thread's harness at it.
    pub fn start() -> Self {
        Self::start_on("sqlite://tansu.db")
    }

    /// A broker that keeps its log in memory only: lost when it stops.
    pub fn start_in_memory() -> Self {
        Self::start_on("memory://tansu/")
    }

    fn start_on(storage: &'static str) -> Self {
        let broker = Self::start_advertising(storage, None);
        let address = format!("127.0.0.1:{}", broker.port);
        PRIVATE_BROKERS.with(|cell| *cell.borrow_mut() = Some(address));
        broker
    }

    /// Starts the broker telling clients to connect to `advertised` (a
    /// proxy's port; its own without), without pointing the harness at it.
    fn start_advertising(storage: &'static str, advertised: Option<u16>) -> Self {
        let port = free_port();
        let advertised = advertised.unwrap_or(port);
        let mut broker = Self {
            dir: tempfile::tempdir().expect("temp dir"),
            port,
            advertised,
            child: None,
            storage,
        };
        broker.resume();
        broker
    }

    fn tansu() -> PathBuf {
        if let Ok(path) = std::env::var("RAPPORT_TANSU") {
            return path.into();
        }
        let home = std::env::var("HOME").expect("HOME");
        PathBuf::from(home).join(".cache/rapport/tools/bin/tansu")
    }

    /// Starts (again) on the same port and storage.
    pub fn resume(&mut self) {
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("broker.log"))
            .expect("broker log");
        // tansu 0.6 wants a relative sqlite path, so run it inside its directory.
        let child = Command::new(Self::tansu())
            .current_dir(self.dir.path())
            .args([
                "broker",
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &advertised,
                "--storage-engine",
                self.storage,
            ])
            .env_remove("STORAGE_ENGINE")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "starting tansu from {}: {error}; `make test` installs it",
                    Self::tansu().display()
                )
            });
        self.child = Some(child);
        wait_for(
            "the private broker to listen",
            Duration::from_secs(20),
            || std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
        );
    }

    /// Where the broker keeps its storage (and its log).
    pub fn storage_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of the broker's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(40).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Stops the broker's process (SIGSTOP): connections stay open, nothing
    /// is answered, as with a hung machine or a network partition.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen broker run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the broker runs");
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} the broker");
    }

    /// Kills the broker with SIGKILL: no chance to answer what it was
    /// handling or to close a connection cleanly.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the broker");
            let _ = child.wait();
        }
    }

    /// Stops the broker cleanly (SIGTERM), as an operator would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take()
            && terminate(&mut child, Duration::from_secs(20)).is_none()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends SIGTERM and waits up to `patience` for the exit status.
fn terminate(child: &mut Child, patience: Duration) -> Option<std::process::ExitStatus> {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        PRIVATE_BROKERS.with(|cell| *cell.borrow_mut() = None);
    }
}

/// Where cargo put the service binaries (next to the test executable's `deps/`).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("RAPPORT_BIN_DIR") {
        return dir.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

/// A port no other service of this test process has been given, free when
/// asked. Ports come from a counter below the kernel's ephemeral range
/// (32768 and up on Linux): an ephemeral port, released and handed to a
/// service, could meanwhile go to another test's service or connection,
/// and a /healthz answered by that stranger passed for ours. cargo runs
/// test binaries one after another; each starts at an offset of its own.
pub fn free_port() -> u16 {
    const FIRST: u32 = 10_000;
    const COUNT: u32 = 22_000;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let offset = (std::process::id() % 220) * 100;
    for _ in 0..COUNT {
        let taken = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (FIRST + (offset + taken) % COUNT) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + COUNT);
}

/// Topic names unique to one test.
#[derive(Clone, Debug)]
pub struct Topics {
    pub raw: String,
    pub customer: String,
    pub deadletters: String,
    /// The key registry: the test process's own (see [`test_keys`]).
    pub keys: String,
    /// Where this pipeline's projector processes find one another.
    pub projectors: String,
}

impl Topics {
    pub fn unique(label: &str) -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let suffix = &suffix[..12];
        Self {
            raw: format!("test.{label}.{suffix}.raw"),
            customer: format!("test.{label}.{suffix}.customer"),
            deadletters: format!("test.{label}.{suffix}.deadletters"),
            keys: register_test_keys().topic.clone(),
            projectors: format!("test.{label}.{suffix}.projectors"),
        }
    }

    /// Another customer topic for a second, independent identity pipeline
    /// reading the same raw topic.
    pub fn with_customer_topic(&self, label: &str) -> Self {
        Self {
            customer: format!("{}.{label}", self.customer),
            ..self.clone()
        }
    }

    pub fn create(&self, raw_partitions: i32, customer_partitions: i32) {
        self.create_overriding(raw_partitions, customer_partitions, &[]);
    }

    /// Like `create`, with some configuration values other than defined.
    pub fn create_overriding(
        &self,
        raw_partitions: i32,
        customer_partitions: i32,
        overrides: &[(&str, &str)],
    ) {
        create_topics_overriding(
            &[
                (&self.raw, raw_partitions, Role::Raw),
                (&self.customer, customer_partitions, Role::Customer),
                (&self.deadletters, 1, Role::DeadLetters),
                (&self.projectors, 1, Role::Projectors),
            ],
            overrides,
        );
    }
}

/// Client settings for the test broker.
pub fn kafka() -> KafkaConfig {
    KafkaConfig {
        brokers: brokers(),
        properties: kafka_properties(),
        ..KafkaConfig::default()
    }
}

/// Creates each topic with the configuration the topic definition gives the
/// topic playing its role (`infra/topics.toml`), as production does.
pub fn create_topics(topics: &[(&str, i32, Role)]) {
    create_topics_overriding(topics, &[]);
}

/// Like `create_topics`, with some configuration values other than defined.
pub fn create_topics_overriding(topics: &[(&str, i32, Role)], overrides: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> =
        rapport_common::kafka::client_config(&kafka(), "rapport-e2e")
            .create()
            .expect("admin client");
    let configs: Vec<BTreeMap<String, String>> = topics
        .iter()
        .map(|(_, _, role)| {
            let mut config = rapport_common::topics::config_for(*role);
            for (key, value) in overrides {
                config.insert((*key).to_owned(), (*value).to_owned());
            }
            config
        })
        .collect();
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .zip(&configs)
        .map(|((name, partitions, _), config)| {
            rapport_common::topics::new_topic(name, *partitions, 1, config)
        })
        .collect();
    let results = block_on(admin.create_topics(
        new_topics.iter(),
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))
    .expect("create topics");
    for result in results {
        if let Err((name, code)) = result {
            panic!("could not create topic {name}: {code}");
        }
    }
    // Wait until the metadata shows every partition.
    let consumer: BaseConsumer = rapport_common::kafka::client_config(&kafka(), "rapport-e2e")
        .create()
        .expect("consumer");
    wait_for("topics to appear", Duration::from_secs(30), || {
        topics.iter().all(|(name, partitions, _)| {
            consumer
                .fetch_metadata(Some(name), Duration::from_secs(5))
                .ok()
                .and_then(|metadata| {
                    metadata
                        .topics()
                        .first()
                        .map(|topic| topic.partitions().len() as i32 == *partitions)
                })
                .unwrap_or(false)
        })
    });
}

/// Waits for a future on this thread (rdkafka's futures need no runtime).
pub use rapport_common::kafka::block_on;

/// The API keys every service the harness starts knows: one of each kind,
/// made once per test process and written to the key registry topic
/// [`TestKeys::topic`] on each broker a test uses.
pub struct TestKeys {
    pub topic: String,
    pub write: String,
    pub read: String,
    pub admin: String,
    pub service: String,
    records: Vec<(Vec<u8>, Vec<u8>)>,
}

static TEST_KEYS: std::sync::OnceLock<TestKeys> = std::sync::OnceLock::new();
static KEYED_BROKERS: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// The test keys (see [`register_test_keys`] for the broker's side).
pub fn test_keys() -> &'static TestKeys {
    use rapport_common::apikeys::{Kind, create};
    TEST_KEYS.get_or_init(|| {
        let made: Vec<_> = Kind::ALL
            .into_iter()
            .map(|kind| {
                create(kind, &format!("e2e {}", kind.as_str()), now_ms(), None).expect("a key")
            })
            .collect();
        let secret = |kind: Kind| {
            made.iter()
                .find(|key| key.info.kind == kind)
                .map(|key| key.secret.clone())
                .expect("made")
        };
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        TestKeys {
            topic: format!("test.keys.{}", &suffix[..12]),
            write: secret(Kind::Write),
            read: secret(Kind::Read),
            admin: secret(Kind::Admin),
            service: secret(Kind::Service),
            records: made.iter().map(|key| key.info.record()).collect(),
        }
    })
}

/// Writes the test keys to their registry topic on this thread's broker,
/// once per broker, and returns them.
pub fn register_test_keys() -> &'static TestKeys {
    let keys = test_keys();
    let broker = brokers();
    let mut keyed = KEYED_BROKERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !keyed.contains(&broker) {
        create_topics(&[(&keys.topic, 1, Role::Keys)]);
        for (key, payload) in &keys.records {
            produce_raw(&keys.topic, key, payload);
        }
        keyed.insert(broker);
    }
    keys
}

fn now_ms() -> i64 {
    rapport_common::now_ms()
}

/// The lines of a service configuration file that point it at the test
/// key registry (TOML top-level keys and a table, for the end of a file).
pub fn auth_config() -> &'static str {
    // Tests send requests as fast as they can: the default rates would
    // throttle them, and the limits have their own tests.
    "[rate_limits]\nwrite_per_second = 1000000\nread_per_second = 1000000\nadmin_per_second = 1000000\nservice_per_second = 1000000\nfailed_auth_per_minute = 1000000\n"
}

/// `Authorization` header value for `secret`.
pub fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

/// Polls `condition` until it holds, failing the test after `patience`.
pub fn wait_for(what: &str, patience: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {patience:?} waiting for {what}");
}

/// Polls `value` until it gives one, failing the test after a minute.
pub fn wait_for_value<T>(what: &str, mut value: impl FnMut() -> Option<T>) -> T {
    let mut found = None;
    wait_for(what, Duration::from_secs(60), || {
        found = value();
        found.is_some()
    });
    found.expect("waited for")
}

/// Sends `batches` to ingest at `ingest_url` on a thread of its own, one
/// after another with `pause` between them, insisting on 202 for each.
pub fn send_in_background(
    ingest_url: &str,
    batches: Vec<Vec<Value>>,
    pause: Duration,
) -> std::thread::JoinHandle<()> {
    let url = format!("{ingest_url}/v1/events");
    std::thread::spawn(move || {
        for batch in batches {
            let (status, answer) = post_json(&url, &serde_json::json!({ "events": batch }));
            assert_eq!(status, 202, "{answer}");
            std::thread::sleep(pause);
        }
    })
}

/// A small deterministic generator (xorshift), seeded from the clock and
/// printed by the tests that use it, so a failing run can be repeated.
pub struct Random(pub u64);

impl Random {
    /// The next value, below `bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One service process.
pub struct Service {
    name: &'static str,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
    pub port: u16,
}

impl Service {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("service log");
        let child = Command::new(bin_dir().join(self.name))
            .args(&self.args)
            .env("RUST_LOG", "info")
            .env_remove("RAPPORT_CONFIG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "starting {} from {}: {error}; build with `cargo build --bins`",
                    self.name,
                    bin_dir().display()
                )
            });
        self.child = Some(child);
        let url = format!("http://127.0.0.1:{}/healthz", self.port);
        wait_for(
            &format!("{} to answer /healthz", self.name),
            Duration::from_secs(30),
            || {
                if let Some(child) = self.child.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    panic!(
                        "{} exited with {status}; log:\n{}",
                        self.name,
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    );
                }
                http_agent().get(&url).call().is_ok()
            },
        );
    }

    /// kill -9: no chance to flush or commit anything.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let log = || std::fs::read_to_string(&self.log).unwrap_or_default();
            match terminate(&mut child, Duration::from_secs(30)) {
                Some(status) => assert!(
                    status.success(),
                    "{} exited with {status} on SIGTERM; log:\n{}",
                    self.name,
                    log()
                ),
                None => {
                    let _ = child.kill();
                    panic!("{} did not stop within 30 s of SIGTERM", self.name);
                }
            }
        }
    }

    /// Adds command-line arguments for the next (re)start.
    pub fn add_args(&mut self, extra: &[&str]) {
        self.args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    }

    pub fn restart(&mut self) {
        self.kill_hard();
        self.spawn();
    }

    /// Starts the service again after [`Service::stop`] or
    /// [`Service::kill_hard`], with the same arguments.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        self.spawn();
    }

    /// SIGTERM, a clean exit, and a new start: a planned restart.
    pub fn restart_cleanly(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The most resident memory the process has used, from /proc (Linux).
    pub fn peak_memory_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// CPU time (user + system, every thread, including ended ones) the
    /// process has used so far, from /proc (Linux).
    pub fn cpu_seconds(&self) -> Option<f64> {
        process_cpu_seconds(self.child.as_ref()?.id())
    }

    /// CPU time the service's threads have used so far, by kind of thread
    /// (see [`threads_cpu_seconds`]).
    pub fn threads_cpu_seconds(&self) -> Option<Vec<(String, f64)>> {
        threads_cpu_seconds(self.child.as_ref()?.id())
    }

    /// Resets the peak that [`peak_memory_kib`](Self::peak_memory_kib)
    /// reports to the current resident memory (Linux `clear_refs`), so that
    /// the next reading covers only what follows.
    pub fn reset_peak_memory(&self) {
        if let Some(child) = self.child.as_ref() {
            let _ = std::fs::write(format!("/proc/{}/clear_refs", child.id()), "5");
        }
    }

    /// The service's `/metrics` text. An unreachable endpoint fails the
    /// test: it must never read as a page of zeros.
    pub fn metrics(&self) -> String {
        self.try_metrics().unwrap_or_else(|error| {
            panic!(
                "{} on port {} serves no /metrics: {error}; log:\n{}",
                self.name,
                self.port,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            )
        })
    }

    /// The service's `/metrics` text, or why it could not be read.
    pub fn try_metrics(&self) -> Result<String, String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        let mut response = http_agent()
            .get(&url)
            .header("authorization", bearer(&test_keys().read))
            .call()
            .map_err(|error| error.to_string())?;
        response
            .body_mut()
            .read_to_string()
            .map_err(|error| error.to_string())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

/// The sum of the series of metric `name` whose labels contain
/// `label_filter`, in Prometheus text. A metric with no such series fails
/// the test: a missing gauge is not a zero (see [`metric_value`] where it
/// may legitimately be missing).
pub fn metric_sum(text: &str, name: &str, label_filter: &str) -> i64 {
    metric_value(text, name, label_filter).unwrap_or_else(|| {
        let exported: Vec<&str> = text.lines().filter(|line| line.starts_with(name)).collect();
        panic!("no series of {name} matches {label_filter:?}; exported: {exported:?}")
    })
}

/// [`metric_sum`], or `None` when no series matches (a gauge not set yet).
/// A series whose value does not parse as an integer fails the test.
pub fn metric_value(text: &str, name: &str, label_filter: &str) -> Option<i64> {
    let values: Vec<i64> = text
        .lines()
        .filter(|line| {
            !line.starts_with('#') && line.starts_with(name) && line.contains(label_filter)
        })
        .filter(|line| line[name.len()..].starts_with([' ', '{']))
        .map(|line| {
            line.rsplit(' ')
                .next()
                .and_then(|value| value.parse::<i64>().ok())
                .unwrap_or_else(|| panic!("{name}: not an integer in {line:?}"))
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// A whole pipeline: ingest, identity and projector on their own topics and
/// data directories.
pub struct Pipeline {
    pub topics: Topics,
    pub dir: tempfile::TempDir,
    pub ingest: Option<Service>,
    pub identity: Service,
    pub projector: Service,
}

impl Pipeline {
    /// Creates topics and starts all three services.
    pub fn start(label: &str) -> Self {
        let topics = Topics::unique(label);
        topics.create(4, 4);
        Self::start_on(topics, true)
    }

    /// Creates topics and starts all three services with `extra` appended to
    /// their configuration file (TOML sections other than kafka and topics).
    pub fn start_configured(label: &str, extra: &str) -> Self {
        let topics = Topics::unique(label);
        topics.create(4, 4);
        Self::start_on_configured(topics, true, extra, None)
    }

    /// Starts services over existing topics; without ingest when `with_ingest`
    /// is false (a second pipeline reading another's raw topic).
    pub fn start_on(topics: Topics, with_ingest: bool) -> Self {
        Self::start_on_configured(topics, with_ingest, "", None)
    }

    /// A second pipeline without ingest over `other`'s raw topic (and
    /// `topics`' customer topic), opening sealed values with `other`'s
    /// vault, as every service of one deployment does.
    pub fn start_beside(other: &Pipeline, topics: Topics) -> Self {
        Self::start_on_configured(topics, false, "", Some(other.identity.port))
    }

    fn start_on_configured(
        topics: Topics,
        with_ingest: bool,
        extra: &str,
        vault_of: Option<u16>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("rapport.toml");
        // Ingest and the projector reach the vault on this identity (or
        // on the one whose vault sealed the raw topic).
        let identity_port = free_port();
        let privacy = if extra.contains("[privacy]") {
            String::new()
        } else {
            format!(
                "[privacy]\nvault_url = \"http://127.0.0.1:{}\"\nservice_key = \"{}\"\n",
                vault_of.unwrap_or(identity_port),
                test_keys().service
            )
        };
        std::fs::write(
            &config,
            format!("[kafka]\nbrokers = \"{}\"\nproperties = {{ {} }}\n[topics]\nraw = \"{}\"\ncustomer = \"{}\"\ndeadletters = \"{}\"\nkeys = \"{}\"\nprojectors = \"{}\"\n{}{extra}", brokers(), toml_pairs(&kafka_properties()), topics.raw, topics.customer, topics.deadletters, register_test_keys().topic, topics.projectors, if extra.contains("[rate_limits]") { "" } else { auth_config() }) + &privacy,
        )
        .expect("write config");
        let config_arg = config.display().to_string();
        let service = |name: &'static str, extra: Vec<String>, log: &str, port: u16| {
            let mut args = vec![
                "--config".to_owned(),
                config_arg.clone(),
                "--listen".to_owned(),
                format!("127.0.0.1:{port}"),
            ];
            args.extend(extra);
            Service {
                name,
                args,
                child: None,
                log: dir.path().join(log),
                port,
            }
        };
        let data = |name: &str| dir.path().join(name).display().to_string();
        let mut identity = service(
            "rapport-identity",
            vec![
                "--data-dir".into(),
                data("identity"),
                "--vault-dir".into(),
                data("vault"),
                "--reorder-grace-ms".into(),
                "1000".into(),
            ],
            "identity.log",
            identity_port,
        );
        let mut projector = service(
            "rapport-projector",
            vec!["--data-dir".into(), data("projector")],
            "projector.log",
            free_port(),
        );
        identity.spawn();
        projector.spawn();
        let ingest = with_ingest.then(|| {
            let mut ingest = service("rapport-ingest", vec![], "ingest.log", free_port());
            ingest.spawn();
            ingest
        });
        Self {
            topics,
            dir,
            ingest,
            identity,
            projector,
        }
    }

    /// A second projector with an empty store over this pipeline's customer
    /// topic (for rebuild measurements), its data and log named after
    /// `name`. It runs alone: it announces itself on a projectors topic of
    /// its own, so the pipeline's projector never sends it reads.
    pub fn start_projector_only(other: &Pipeline, name: &str) -> Service {
        Self::start_projector_only_with(other, name, &[])
    }

    /// [`Pipeline::start_projector_only`] with extra command-line arguments.
    pub fn start_projector_only_with(other: &Pipeline, name: &str, extra: &[&str]) -> Service {
        Self::start_projector_in(other, name, name, extra)
    }

    /// A projector process over this pipeline's customer topic in a
    /// deployment of its own named `deployment`: the processes started with
    /// one name find one another on a projectors topic of theirs, and
    /// neither the pipeline's projector nor other deployments see them.
    pub fn start_projector_in(
        other: &Pipeline,
        deployment: &str,
        name: &str,
        extra: &[&str],
    ) -> Service {
        let config = other.dir.path().join(format!("rapport-{deployment}.toml"));
        if !config.exists() {
            let shared = other.dir.path().join("rapport.toml");
            let text = std::fs::read_to_string(&shared).expect("the pipeline's config");
            let topic = format!("{}.{deployment}", other.topics.projectors);
            create_topics(&[(&topic, 1, Role::Projectors)]);
            let text = text.replace(
                &format!("projectors = \"{}\"", other.topics.projectors),
                &format!("projectors = \"{topic}\""),
            );
            std::fs::write(&config, text).expect("write the deployment's config");
        }
        Self::start_projector(other, name, &config, extra)
    }

    /// Projector processes over this pipeline's customer topic in a
    /// deployment of their own named `deployment`, one per entry of
    /// `owners` (the partitions it owns), each with what it owns.
    pub fn start_layout(
        other: &Pipeline,
        deployment: &str,
        owners: &[Vec<i32>],
    ) -> Vec<(Service, Vec<i32>)> {
        owners
            .iter()
            .enumerate()
            .map(|(index, partitions)| {
                let list = partitions
                    .iter()
                    .map(i32::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                let service = Self::start_projector_in(
                    other,
                    deployment,
                    &format!("projector-{deployment}-{index}"),
                    &["--partitions", &list],
                );
                (service, partitions.clone())
            })
            .collect()
    }

    /// Another projector process of this pipeline's deployment, with
    /// `extra` arguments (`--partitions …`): it finds the others on the
    /// pipeline's projectors topic, and they it.
    pub fn start_peer_projector(other: &Pipeline, name: &str, extra: &[&str]) -> Service {
        let config = other.dir.path().join("rapport.toml");
        Self::start_projector(other, name, &config, extra)
    }

    fn start_projector(other: &Pipeline, name: &str, config: &Path, extra: &[&str]) -> Service {
        let port = free_port();
        let data = other.dir.path().join(name).display().to_string();
        let mut projector = Service {
            name: "rapport-projector",
            args: vec![
                "--config".into(),
                config.display().to_string(),
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--data-dir".into(),
                data,
            ],
            child: None,
            log: other.dir.path().join(format!("{name}.log")),
            port,
        };
        projector.add_args(extra);
        projector.spawn();
        projector
    }

    fn run_rapportctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin_dir().join("rapportctl"))
            .arg("--config")
            .arg(self.dir.path().join("rapport.toml"))
            .args([
                "--query-url",
                &self.query_url(),
                "--identity-url",
                &format!("http://127.0.0.1:{}", self.identity.port),
            ])
            .args(args)
            .env("RAPPORT_KEY", &test_keys().admin)
            .output()
            .expect("run rapportctl")
    }

    /// Runs `rapportctl` and returns whether it succeeded and what it printed.
    pub fn try_rapportctl(&self, args: &[&str]) -> (bool, String) {
        let output = self.run_rapportctl(args);
        (
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    }

    /// Runs `rapportctl` against this pipeline's topics and services;
    /// returns its standard output, failing the test if it fails.
    pub fn rapportctl(&self, args: &[&str]) -> String {
        let output = self.run_rapportctl(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "rapportctl {args:?} failed: {}\n{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    pub fn ingest_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.ingest
                .as_ref()
                .expect("this pipeline has no ingest")
                .port
        )
    }

    /// The pseudonym this pipeline's services give identifier `value` of
    /// `kind` (`"customer_id"`, `"email"`, …), as found on its topics.
    pub fn pseudonym(&self, kind: &str, value: &str) -> String {
        let key = self.vault_pseudonym_key();
        let normalised = rapport_projections::identity::IdentifierKind::parse(kind)
            .and_then(|kind| rapport_projections::identity::Identifier::normalised(kind, value))
            .expect("a known kind and a usable value");
        rapport_common::privacy::pseudonym(&key, kind, &normalised.value)
    }

    /// The pseudonym key of this pipeline's vault.
    pub fn vault_pseudonym_key(&self) -> rapport_common::privacy::SecretKey {
        let (status, answer) = get_json_with_key(
            &format!("{}/v1/vault/pseudonym-key", self.identity_url()),
            Some(&test_keys().service),
        );
        assert_eq!(status, 200, "{answer}");
        rapport_common::privacy::SecretKey::from_hex(answer["key"].as_str().expect("a key"))
            .expect("64 hex digits")
    }

    pub fn identity_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.identity.port)
    }

    pub fn query_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.projector.port)
    }

    /// POSTs a JSON batch; returns the status and the JSON answer.
    pub fn send(&self, events: &[Value]) -> (u16, Value) {
        post_json_with_key(
            &format!("{}/v1/events", self.ingest_url()),
            &serde_json::json!({ "events": events }),
            Some(&test_keys().write),
        )
    }

    /// Sends and insists on 202.
    pub fn send_ok(&self, events: &[Value]) {
        let (status, answer) = self.send(events);
        assert_eq!(status, 202, "ingest refused the batch: {answer}");
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        get_json(&format!("{}{path}", self.query_url()))
    }

    /// Waits until GET `path` answers 200 and `check` accepts the body.
    pub fn wait_for_json(
        &self,
        path: &str,
        patience: Duration,
        mut check: impl FnMut(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            let (status, body) = self.get(path);
            if status == 200 && check(&body) {
                return body;
            }
            last = body;
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out waiting for {path}; last answer: {last}\nidentity log:\n{}\nprojector log:\n{}",
            self.log("identity.log"),
            self.log("projector.log")
        );
    }

    /// The last lines of a service's log. A service that stopped with an
    /// error ends its log with the error and then, when `RUST_BACKTRACE` is
    /// set, a backtrace; the backtrace is left out so that the error shows.
    pub fn log(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let text = text
            .split_once("\nStack backtrace:")
            .map_or(text.as_str(), |(before, _)| before);
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// The column family of the projection version that serves queries,
    /// such as `customer_view.v1`, from the projector's status.
    pub fn live_projection(&self) -> String {
        let (status, body) = self.get("/v1/admin/status");
        assert_eq!(status, 200, "projector status: {body}");
        body["projections"]
            .as_array()
            .and_then(|projections| {
                projections
                    .iter()
                    .find(|projection| projection["live"] == true)
            })
            .and_then(|live| {
                Some(format!(
                    "{}.{}",
                    live["projection"].as_str()?,
                    live["version"].as_str()?
                ))
            })
            .unwrap_or_else(|| panic!("no live projection in the status: {body}"))
    }

    /// Waits until identity has resolved the whole raw topic and the live
    /// projection has applied the whole customer topic.
    pub fn wait_until_caught_up(&self, patience: Duration) {
        let live = self.live_projection();
        // A partition with no gauge yet has applied nothing.
        let applied = |metrics: &str, name: &str, partition: i32| {
            let labels = if name.starts_with("rapport_projector") {
                format!("projection=\"{live}\",partition=\"{partition}\"")
            } else {
                format!("partition=\"{partition}\"")
            };
            metric_value(metrics, name, &labels)
        };
        let mut last = String::new();
        let (mut raw_tail, mut customer_tail) = (
            TopicTail::new(&self.topics.raw, false),
            TopicTail::new(&self.topics.customer, false),
        );
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            let raw_ends = raw_tail.ends();
            let identity_metrics = self.identity.metrics();
            let identity_at: BTreeMap<i32, Option<i64>> = raw_ends
                .keys()
                .map(|partition| {
                    (
                        *partition,
                        applied(
                            &identity_metrics,
                            "rapport_identity_applied_offset",
                            *partition,
                        ),
                    )
                })
                .collect();
            let customer_ends = customer_tail.ends();
            let projector_metrics = self.projector.metrics();
            let projector_at: BTreeMap<i32, Option<i64>> = customer_ends
                .keys()
                .map(|partition| {
                    (
                        *partition,
                        applied(
                            &projector_metrics,
                            "rapport_projector_applied_offset",
                            *partition,
                        ),
                    )
                })
                .collect();
            let done = |ends: &BTreeMap<i32, i64>, at: &BTreeMap<i32, Option<i64>>| {
                ends.iter()
                    .all(|(partition, end)| *end == 0 || at[partition] == Some(end - 1))
            };
            if done(&raw_ends, &identity_at) && done(&customer_ends, &projector_at) {
                return;
            }
            last = format!(
                "raw ends {raw_ends:?}, identity at {identity_at:?}; customer ends {customer_ends:?}, projector at {projector_at:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "timed out after {patience:?} waiting for the pipeline to catch up: {last}\nidentity log:\n{}\nprojector log:\n{}",
            self.log("identity.log"),
            self.log("projector.log")
        );
    }
}

/// Reads a topic from the beginning to its end as fetches report it.
///
/// tansu 0.6's ListOffsets answers the base offset of a partition's last
/// record batch + 1 instead of its end, so `fetch_watermarks` (and seeking to
/// `Offset::End`) cannot be trusted there; the end is found by consuming
/// until every partition reports end-of-partition. Kept open, a tracker only
/// reads what was added since its last call.
pub struct TopicTail {
    consumer: BaseConsumer<rapport_common::kafka::HealthContext>,
    topic: String,
    next: BTreeMap<i32, i64>,
    /// Partition, offset, key and payload of every record read.
    payloads: Vec<(i32, i64, Vec<u8>, Vec<u8>)>,
    keep_payloads: bool,
    /// Partitions whose end was reported after their last record.
    at_end: std::collections::BTreeSet<i32>,
}

impl TopicTail {
    pub fn new(topic: &str, keep_payloads: bool) -> Self {
        let (consumer, _) =
            rapport_common::kafka::assigning_consumer(&kafka(), "rapport-e2e", true)
                .expect("consumer");
        let partitions =
            rapport_common::kafka::partition_count(&consumer, topic, Duration::from_secs(10))
                .expect("partitions");
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .expect("assign");
        }
        consumer.assign(&assignment).expect("assign");
        Self {
            consumer,
            topic: topic.to_owned(),
            next: (0..partitions).map(|partition| (partition, 0)).collect(),
            payloads: Vec::new(),
            keep_payloads,
            at_end: Default::default(),
        }
    }

    /// The next offset of every partition (its end, once caught up).
    pub fn ends(&mut self) -> BTreeMap<i32, i64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        // One short poll even when every partition was at its end, to pick
        // up what arrived since.
        let mut first = true;
        while first || self.at_end.len() < self.next.len() {
            first = false;
            assert!(
                Instant::now() < deadline,
                "could not reach the end of {}",
                self.topic
            );
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    self.at_end.remove(&message.partition());
                    self.next.insert(message.partition(), message.offset() + 1);
                    if self.keep_payloads {
                        self.payloads.push((
                            message.partition(),
                            message.offset(),
                            message.key().unwrap_or_default().to_vec(),
                            message.payload().unwrap_or_default().to_vec(),
                        ));
                    }
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                    self.at_end.insert(partition);
                }
                Some(Err(error)) => panic!("reading {}: {error}", self.topic),
                None => {}
            }
        }
        self.next.clone()
    }
}

/// The end (next offset) of every partition of `topic`.
pub fn high_watermarks(topic: &str) -> BTreeMap<i32, i64> {
    TopicTail::new(topic, false).ends()
}

/// Every record payload of `topic`, from the beginning to the end, in
/// partition and offset order.
pub fn read_all(topic: &str) -> Vec<Vec<u8>> {
    let mut tail = TopicTail::new(topic, true);
    tail.ends();
    tail.payloads
        .sort_by_key(|(partition, offset, _, _)| (*partition, *offset));
    tail.payloads
        .into_iter()
        .map(|(_, _, _, payload)| payload)
        .collect()
}

/// The distinct record keys of each partition of `topic` (for the customer
/// topic: the canonical customer ids each partition holds).
pub fn keys_by_partition(topic: &str) -> BTreeMap<i32, std::collections::BTreeSet<String>> {
    let mut tail = TopicTail::new(topic, true);
    tail.ends();
    let mut keys: BTreeMap<i32, std::collections::BTreeSet<String>> = BTreeMap::new();
    for (partition, _, key, _) in tail.payloads {
        keys.entry(partition)
            .or_default()
            .insert(String::from_utf8(key).expect("a UTF-8 key"));
    }
    keys
}

pub fn http_agent() -> ureq::Agent {
    http_agent_with_timeout(Duration::from_secs(30))
}

/// An agent for requests that may take long (benchmarks of full re-scores).
pub fn http_agent_with_timeout(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// POSTs JSON with the test admin key.
pub fn post_json(url: &str, body: &Value) -> (u16, Value) {
    post_json_with_key(url, body, Some(&test_keys().admin))
}

/// POSTs JSON with `key` as the bearer key, or none.
pub fn post_json_with_key(url: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
    let mut request = http_agent()
        .post(url)
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("authorization", bearer(key));
    }
    read_response(request.send(serde_json::to_vec(body).expect("json")))
}

/// GETs JSON with the test admin key.
pub fn get_json(url: &str) -> (u16, Value) {
    get_json_with_key(url, Some(&test_keys().admin))
}

/// `GET /v1/admin/status` of the projector at `port` (its ownership
/// section says who serves which partition).
pub fn admin_status(port: u16) -> Value {
    let (status, body) = get_json(&format!("http://127.0.0.1:{port}/v1/admin/status"));
    assert_eq!(status, 200, "{body}");
    body
}

/// GETs JSON with `key` as the bearer key, or none.
pub fn get_json_with_key(url: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = http_agent().get(url);
    if let Some(key) = key {
        request = request.header("authorization", bearer(key));
    }
    read_response(request.call())
}

fn read_response(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    match response {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let text = response.body_mut().read_to_string().unwrap_or_default();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        }
        Err(error) => panic!("HTTP request failed: {error}"),
    }
}

/// A new event id.
pub fn event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Produces one record straight to a topic, bypassing ingest.
pub fn produce_raw(topic: &str, key: &[u8], payload: &[u8]) {
    let (producer, _) = rapport_common::kafka::producer(
        &kafka(),
        "rapport-e2e",
        Some(Duration::from_secs(30)),
        1_000,
    )
    .expect("producer");
    let record = rapport_common::kafka::Outgoing {
        topic: topic.to_owned(),
        key: key.to_vec(),
        payload: payload.to_vec(),
        timestamp_ms: Some(rapport_common::now_ms()),
        headers: Vec::new(),
    };
    rapport_common::kafka::produce_all(&producer, &[record]).expect("produce");
}

/// Records a stream has brought up to the offsets in the series of `name`
/// that match `filter`: the sum of offset + 1 over partitions; `None`
/// while no series is exported.
fn offsets_as_records(metrics: &str, name: &str, filter: &str) -> Option<i64> {
    let mut any = false;
    let records = metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(filter))
        .map(|line| {
            any = true;
            let offset: i64 = line
                .rsplit(' ')
                .next()
                .and_then(|value| value.parse().ok())
                .unwrap_or_else(|| panic!("{name}: not an offset in {line:?}"));
            offset + 1
        })
        .sum();
    any.then_some(records)
}

/// Customer records the projector has committed into `projection` (a
/// column family such as `customer_view.r2`), from the offsets it reports:
/// they survive restarts, unlike its record counters.
pub fn committed_records(projector: &Service, projection: &str) -> i64 {
    let label = format!("projection=\"{projection}\"");
    offsets_as_records(
        &projector.metrics(),
        "rapport_projector_applied_offset",
        &label,
    )
    .unwrap_or(0)
}

/// Customer records `projection`'s state on disk held when the projector
/// started, or `None` before its worker has read its stored offsets.
pub fn resumed_records(projector: &Service, projection: &str) -> Option<i64> {
    let label = format!("projection=\"{projection}\"");
    offsets_as_records(
        &projector.metrics(),
        "rapport_projector_resumed_offset",
        &label,
    )
}

/// Raw records identity has committed, from the offsets it reports.
pub fn identity_committed_records(identity: &Service) -> i64 {
    offsets_as_records(&identity.metrics(), "rapport_identity_applied_offset", "").unwrap_or(0)
}

/// Raw records identity's graph held when it started, or `None` before its
/// resolver has read its stored offsets.
pub fn identity_resumed_records(identity: &Service) -> Option<i64> {
    offsets_as_records(&identity.metrics(), "rapport_identity_resumed_offset", "")
}

/// What one SIGKILL found: how far the service had committed just before
/// it was killed, and how far the state it restarted from had got.
#[derive(Debug, Clone, Copy)]
pub struct Kill {
    pub committed: i64,
    pub resumed: i64,
}

/// Waits until `committed(service)` reaches `target` (of `total`) and
/// the service has committed something since it started, kills it with
/// SIGKILL there, restarts it and waits until it says where it resumed.
/// Fails the test if the service had already finished the stream (a kill
/// that tests nothing). A restart may resume from nothing when the kill
/// came before the first flush, and a little past `committed` when a batch
/// committed between the reading and the kill; callers judge the series.
pub fn kill_when_committed(
    service: &mut Service,
    target: i64,
    total: i64,
    committed: impl Fn(&Service) -> i64,
    resumed: impl Fn(&Service) -> Option<i64>,
) -> Kill {
    let deadline = Instant::now() + Duration::from_secs(300);
    // Where this run started: a kill counts only once the service has
    // applied something since, so that it dies while applying, not while
    // starting.
    let started_from = wait_for_value("the service to report where it started", || {
        resumed(service)
    });
    let at = loop {
        let at = committed(service);
        if at >= target && at > started_from {
            break at;
        }
        assert!(
            Instant::now() < deadline,
            "{} stopped at {at} records of {total} before the kill at {target} (it started from {started_from})",
            service.name
        );
        // Tight: a batch is a few milliseconds of work.
        std::thread::sleep(Duration::from_millis(2));
    };
    service.kill_hard();
    assert!(
        at < total,
        "{} had committed all {total} records before the kill at {target}",
        service.name
    );
    service.spawn();
    let from = wait_for_value("the restarted service to report where it resumed", || {
        resumed(service)
    });
    Kill {
        committed: at,
        resumed: from,
    }
}

/// [`kill_when_committed`] for a projector, counting what `projection`
/// (a column family such as `customer_view.v1`) has committed.
pub fn kill_projector_when_committed(
    projector: &mut Service,
    projection: &str,
    target: i64,
    total: i64,
) -> Kill {
    kill_when_committed(
        projector,
        target,
        total,
        |projector| committed_records(projector, projection),
        |projector| resumed_records(projector, projection),
    )
}

/// [`kill_when_committed`] for identity, counting raw records.
pub fn kill_identity_when_committed(identity: &mut Service, target: i64, total: i64) -> Kill {
    kill_when_committed(
        identity,
        target,
        total,
        identity_committed_records,
        identity_resumed_records,
    )
}

/// The projection version a new projector serves: its column family.
pub const FIRST_LIVE_PROJECTION: &str = "customer_view.v1";

/// Whether the projector `service` has applied every partition of the
/// customer topic up to `ends` (partition ends, from [`high_watermarks`])
/// into `projection` (a column family such as `customer_view.v1`).
pub fn applied_through(service: &Service, projection: &str, ends: &BTreeMap<i32, i64>) -> bool {
    let metrics = service.metrics();
    ends.iter().all(|(partition, end)| {
        *end == 0
            || metric_value(
                &metrics,
                "rapport_projector_applied_offset",
                &format!("projection=\"{projection}\",partition=\"{partition}\""),
            )
            .is_some_and(|applied| applied >= end - 1)
    })
}

/// Whether the projector `service` has applied `partitions` up to `ends`
/// and sees each of the customer topic's `count` partitions served.
pub fn serves_whole(
    service: &Service,
    partitions: &[i32],
    ends: &BTreeMap<i32, i64>,
    count: usize,
) -> bool {
    let owned: BTreeMap<i32, i64> = ends
        .iter()
        .filter(|(partition, _)| partitions.contains(partition))
        .map(|(partition, end)| (*partition, *end))
        .collect();
    if !applied_through(service, FIRST_LIVE_PROJECTION, &owned) {
        return false;
    }
    let status = admin_status(service.port);
    let ownership = &status["ownership"];
    ownership["unowned"] == serde_json::json!([])
        && ownership["catching_up"] == serde_json::json!([])
        && ownership["partitions"].as_array().is_some_and(|all| {
            all.len() == count
                && all
                    .iter()
                    .all(|partition| partition["served_by"].is_string())
        })
}

/// Asserts that the stopped projectors' stores at `expected` and `actual`
/// hold the same keys and values, and at least `at_least` keys.
pub fn assert_same_projection(expected: &Path, actual: &Path, at_least: usize) {
    let expected = projection_contents(expected);
    let actual = projection_contents(actual);
    assert!(
        expected.len() >= at_least,
        "the projection holds the stream ({} keys)",
        expected.len()
    );
    assert_same_contents(&expected, &actual);
}

/// Every key and value of the live customer view in the projector store at
/// `dir`, except the consumed offsets: a crashed identity re-produces
/// records, so topic offsets may differ while the state must not.
pub fn projection_contents(dir: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let family = "customer_view.v1";
    let store =
        rapport_common::store::Store::open(dir, &[family]).expect("open the projector store");
    let mut contents = BTreeMap::new();
    for tag in [b'P', b'T', b'I', b'C', b'W', b'R'] {
        contents.extend(store.scan_prefix(family, &[tag], usize::MAX).expect("scan"));
    }
    contents
}

/// Asserts two projection contents are byte-identical, naming a few differences.
pub fn assert_same_contents(
    expected: &BTreeMap<Vec<u8>, Vec<u8>>,
    actual: &BTreeMap<Vec<u8>, Vec<u8>>,
) {
    let differing: Vec<String> = expected
        .iter()
        .filter(|(key, value)| actual.get(*key) != Some(*value))
        .map(|(key, _)| key)
        .chain(actual.keys().filter(|key| !expected.contains_key(*key)))
        .take(5)
        .map(|key| String::from_utf8_lossy(key).into_owned())
        .collect();
    assert!(
        differing.is_empty(),
        "projections differ ({} vs {} keys), e.g. at {differing:?}",
        expected.len(),
        actual.len()
    );
}

/// An event in the ingest JSON shape.
pub fn event(kind: &str, occurred_at: &str, customer: Value, data: Value) -> Value {
    serde_json::json!({"event_id": event_id(), "type": kind, "occurred_at": occurred_at, "customer": customer, "data": data})
}

/// Clock ticks the whole machine has spent so far, busy and in total (all
/// cores), from `/proc/stat`, on Linux: the difference of two readings
/// says how busy the machine was between them.
pub fn machine_cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal ...: idle and iowait
    // are the idle ones; guest time is already counted in user.
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// CPU time (user and system) process `pid` has used so far, on Linux.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// The CPU time in a `/proc/.../stat` file.
fn stat_cpu_seconds(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name; utime and stime are
    // the 14th and 15th fields, in USER_HZ ticks (100 per second on Linux).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// CPU time process `pid`'s threads have used so far, summed by thread
/// name with any trailing digits dropped (librdkafka's `rdk:broker1`,
/// `rdk:broker2`... are one kind), most first. Threads that have ended are
/// gone from `/proc`; what they used is listed as "ended threads".
pub fn threads_cpu_seconds(pid: u32) -> Option<Vec<(String, f64)>> {
    let mut by_kind: BTreeMap<String, f64> = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let kind = name.trim().trim_end_matches(|c: char| c.is_ascii_digit());
        let seconds = stat_cpu_seconds(&path.join("stat").to_string_lossy()).unwrap_or(0.0);
        *by_kind.entry(kind.to_owned()).or_default() += seconds;
    }
    let running: f64 = by_kind.values().sum();
    let ended = process_cpu_seconds(pid)? - running;
    if ended > 0.0 {
        by_kind.insert("ended threads".to_owned(), ended);
    }
    let mut kinds: Vec<(String, f64)> = by_kind.into_iter().collect();
    kinds.sort_by(|left, right| right.1.total_cmp(&left.1));
    Some(kinds)
}
