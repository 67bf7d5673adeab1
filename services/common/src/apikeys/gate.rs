//! The gate in front of every route: which scope a route needs is declared
//! where the route is ([`ScopedRoutes`]), and the gate checks the key a
//! request carries against it, with a token bucket per key and one per
//! client address for failed attempts.
//!
//! The buckets are hand-written: a bucket is a few lines, and the rate
//! limiting crates (governor and friends) bring clocks, sharded maps and
//! their own dependency trees for what these few lines do.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use base64::Engine as _;

use super::{KeyInfo, KeyState, Kind, Registry, Scope};
pub use crate::config::{AuthMode, RateLimits};
use crate::http::ApiError;
use crate::metrics::Counter;

/// Requests a second a key of `kind` may make.
fn per_second(limits: &RateLimits, kind: Kind) -> f64 {
    f64::from(match kind {
        Kind::Write => limits.write_per_second,
        Kind::Read => limits.read_per_second,
        Kind::Admin => limits.admin_per_second,
        Kind::Service => limits.service_per_second,
    })
}

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            updated: now,
        }
    }

    /// The tokens the bucket holds at `now`.
    fn refilled(&self, rate: f64, burst: f64, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.tokens + elapsed * rate).min(burst)
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        self.tokens = self.refilled(rate, burst, now);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

/// Client addresses tracked for failed attempts, at most; past it the
/// addresses whose buckets have refilled are forgotten.
const MAX_TRACKED_CLIENTS: usize = 10_000;
/// A key's last use is written to the registry at most this often.
const USAGE_REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// Checks keys for one service. Cheap to clone.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<GateInner>,
}

struct GateInner {
    mode: AuthMode,
    registry: Registry,
    limits: RateLimits,
    service: &'static str,
    key_buckets: Mutex<HashMap<String, Bucket>>,
    failure_buckets: Mutex<HashMap<IpAddr, Bucket>>,
    reported_uses: Mutex<HashMap<String, Instant>>,
    refusals: Refusals,
}

struct Refusals {
    missing: Counter,
    unknown: Counter,
    revoked: Counter,
    expired: Counter,
    scope: Counter,
    rate: Counter,
}

impl Gate {
    pub fn new(
        mode: AuthMode,
        registry: Registry,
        limits: RateLimits,
        metrics: &crate::metrics::Registry,
        service: &'static str,
    ) -> Self {
        if mode == AuthMode::Off {
            tracing::warn!(
                service,
                "auth = \"off\": every route answers without a key; never expose this service"
            );
        }
        let counter = |reason: &str| {
            metrics.counter(
                "rapport_auth_refusals_total",
                "Requests refused by the key gate, by reason.",
                &[("service", service), ("reason", reason)],
            )
        };
        let refusals = Refusals {
            missing: counter("missing"),
            unknown: counter("unknown"),
            revoked: counter("revoked"),
            expired: counter("expired"),
            scope: counter("scope"),
            rate: counter("rate"),
        };
        Self {
            inner: Arc::new(GateInner {
                mode,
                registry,
                limits,
                service,
                key_buckets: Mutex::default(),
                failure_buckets: Mutex::default(),
                reported_uses: Mutex::default(),
                refusals,
            }),
        }
    }

    /// A gate that lets everything through, quietly: for in-process tests
    /// of handlers, never for a service.
    pub fn open_for_tests() -> Self {
        let gate = Self::new(
            AuthMode::Keys,
            Registry::default(),
            RateLimits::default(),
            &crate::metrics::Registry::default(),
            "test",
        );
        let mut inner = Arc::try_unwrap(gate.inner).ok().expect("just made");
        inner.mode = AuthMode::Off;
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Admits a request to a route that needs `scope`, or says why not;
    /// says which key it came with (none where no key is needed).
    pub fn admit(
        &self,
        scope: Scope,
        headers: &HeaderMap,
        client: Option<SocketAddr>,
        now: Instant,
        now_ms: i64,
    ) -> Result<Option<Caller>, ApiError> {
        let inner = &*self.inner;
        if inner.mode == AuthMode::Off || scope == Scope::Open {
            return Ok(None);
        }
        let client = client.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |address| address.ip());
        let key = match presented_key(headers) {
            Ok(Some(secret)) => inner.registry.read(|book| book.find(&secret).cloned()),
            Ok(None) => {
                return Err(self.failed(
                    client,
                    now,
                    &inner.refusals.missing,
                    "this route needs an API key: send `Authorization: Bearer <key>`".to_owned(),
                ));
            }
            Err(message) => {
                return Err(self.failed(client, now, &inner.refusals.unknown, message));
            }
        };
        let Some(key) = key else {
            return Err(self.failed(
                client,
                now,
                &inner.refusals.unknown,
                "unknown API key".to_owned(),
            ));
        };
        match key.state(now_ms) {
            KeyState::Live => {}
            KeyState::Revoked => {
                return Err(self.failed(
                    client,
                    now,
                    &inner.refusals.revoked,
                    format!("API key {} was revoked", key.id),
                ));
            }
            KeyState::Expired => {
                return Err(self.failed(
                    client,
                    now,
                    &inner.refusals.expired,
                    format!("API key {} has expired", key.id),
                ));
            }
        }
        if !key.kind.grants(scope) {
            inner.refusals.scope.increment(1);
            let needed = match Kind::for_scope(scope) {
                Some(Kind::Admin) | None => "an admin key".to_owned(),
                Some(kind) => format!("a {} or admin key", kind.as_str()),
            };
            return Err(ApiError::Forbidden(format!(
                "this route needs scope {} ({needed}); key {} is a {} key",
                scope.as_str(),
                key.id,
                key.kind.as_str()
            )));
        }
        self.take_rate(&key, now)?;
        self.note_use(&key, now, now_ms);
        Ok(Some(Caller {
            key_id: key.id,
            kind: key.kind,
        }))
    }

    fn take_rate(&self, key: &KeyInfo, now: Instant) -> Result<(), ApiError> {
        let rate = per_second(&self.inner.limits, key.kind);
        let burst = rate.max(1.0);
        let mut buckets = lock(&self.inner.key_buckets);
        let bucket = buckets
            .entry(key.id.clone())
            .or_insert_with(|| Bucket::full(burst, now));
        bucket.take(rate, burst, now).map_err(|wait| {
            self.inner.refusals.rate.increment(1);
            ApiError::TooManyRequests {
                message: format!(
                    "API key {} is over its rate of {rate} requests a second",
                    key.id
                ),
                retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
            }
        })
    }

    /// A failed attempt: 401 (counted under `reason`), or 429 once the
    /// client address has used up its failures.
    fn failed(&self, client: IpAddr, now: Instant, reason: &Counter, message: String) -> ApiError {
        let burst = f64::from(self.inner.limits.failed_auth_per_minute);
        let rate = burst / 60.0;
        let mut buckets = lock(&self.inner.failure_buckets);
        if buckets.len() >= MAX_TRACKED_CLIENTS {
            // Forget the addresses whose buckets have refilled. If all are
            // still draining (attempts from more addresses than we track),
            // start over: failures are then limited less, never refused more.
            buckets.retain(|_, bucket| bucket.refilled(rate, burst, now) < burst);
            if buckets.len() >= MAX_TRACKED_CLIENTS {
                buckets.clear();
            }
        }
        let bucket = buckets
            .entry(client)
            .or_insert_with(|| Bucket::full(burst, now));
        match bucket.take(rate, burst, now) {
            Ok(()) => {
                reason.increment(1);
                ApiError::Unauthorized(message)
            }
            Err(wait) => {
                self.inner.refusals.rate.increment(1);
                ApiError::TooManyRequests {
                    message: format!("too many failed attempts from {client}; {message}"),
                    retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
                }
            }
        }
    }

    fn note_use(&self, key: &KeyInfo, now: Instant, now_ms: i64) {
        let mut reported = lock(&self.inner.reported_uses);
        let due = reported
            .get(&key.id)
            .is_none_or(|last| now.saturating_duration_since(*last) >= USAGE_REPORT_INTERVAL);
        if due {
            reported.insert(key.id.clone(), now);
            self.inner.registry.report_use(&key.id, now_ms);
        }
    }

    pub fn service(&self) -> &'static str {
        self.inner.service
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The key a request presents: `Authorization: Bearer <key>`, or the
/// HTTP Basic user name (what tracking SDKs send; the password is
/// ignored). `Err` for an Authorization header that is neither.
fn presented_key(headers: &HeaderMap) -> Result<Option<String>, String> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| "the Authorization header is not ASCII".to_owned())?
        .trim();
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty() {
        Ok(Some(credentials.to_owned()))
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .map_err(|_| "the Basic credentials are not base64".to_owned())?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| "the Basic credentials are not UTF-8".to_owned())?;
        let user = decoded
            .split_once(':')
            .map_or(decoded.as_str(), |(user, _)| user);
        if user.is_empty() {
            Err("send the API key as the Basic user name".to_owned())
        } else {
            Ok(Some(user.to_owned()))
        }
    } else {
        Err(
            "the Authorization header must be `Bearer <key>` or Basic with the key as user name"
                .to_owned(),
        )
    }
}

/// The cookie the dashboard's login form sets: the key itself, for the
/// browser session only (no expiry), sent back only to the dashboard's
/// pages (`Path=/ui`, `SameSite=Strict`, `HttpOnly`).
pub const SESSION_COOKIE: &str = "rapport_key";

/// How a page shows a refusal (a login form rather than JSON); given the
/// refusal and the path and query the browser asked for.
pub type PageRefusal = fn(ApiError, &axum::http::Uri) -> Response;

#[derive(Clone)]
struct Guard {
    gate: Gate,
    scope: Scope,
    /// Set for the dashboard's pages.
    page: Option<PageRefusal>,
}

/// The session cookie's key, if the request carries one.
pub fn session_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, key)| key.trim())
        .filter(|key| !key.is_empty())
}

/// The key a request came with, in the request's extensions for handlers
/// that record who asked (an erasure's audit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub key_id: String,
    pub kind: Kind,
}

async fn check(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| *address);
    // A page takes the key from the session cookie when no header carries one.
    let cookie_headers = guard
        .page
        .filter(|_| !request.headers().contains_key(header::AUTHORIZATION))
        .and_then(|_| session_key(request.headers()))
        .and_then(|key| axum::http::HeaderValue::from_str(&format!("Bearer {key}")).ok())
        .map(|value| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value);
            headers
        });
    let headers = cookie_headers.as_ref().unwrap_or(request.headers());
    match guard.gate.admit(
        guard.scope,
        headers,
        client,
        Instant::now(),
        crate::now_ms(),
    ) {
        Ok(caller) => {
            if let Some(caller) = caller {
                request.extensions_mut().insert(caller);
            }
            next.run(request).await
        }
        Err(refusal) => match guard.page {
            Some(show) => show(refusal, request.uri()),
            None => refusal.into_response(),
        },
    }
}

/// One route as declared: method, path with `{placeholders}`, scope.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RouteInfo {
    pub method: &'static str,
    pub path: &'static str,
    pub scope: Scope,
}

/// Every route of a service, for the tests that walk them (and the API
/// description).
pub type RouteTable = Vec<RouteInfo>;

/// Declares routes with the scope each needs; the gate guards each one.
pub struct ScopedRoutes<S> {
    gate: Gate,
    router: Router<S>,
    table: RouteTable,
    page_refusal: Option<PageRefusal>,
}

impl<S: Clone + Send + Sync + 'static> ScopedRoutes<S> {
    pub fn new(gate: &Gate) -> Self {
        Self {
            gate: gate.clone(),
            router: Router::new(),
            table: Vec::new(),
            page_refusal: None,
        }
    }

    /// How the pages declared after this show a refusal.
    pub fn pages_refused_by(mut self, show: PageRefusal) -> Self {
        self.page_refusal = Some(show);
        self
    }

    /// A dashboard page (GET): like [`Self::get`], but the key may come from
    /// the [`SESSION_COOKIE`], and a refusal is shown as the page set by
    /// [`Self::pages_refused_by`] (same status).
    pub fn page<H, T>(self, scope: Scope, path: &'static str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, S>,
        T: 'static,
    {
        let show = self
            .page_refusal
            .expect("declare pages_refused_by before the pages");
        self.add_guarded("GET", scope, path, axum::routing::get(handler), Some(show))
    }

    pub fn get<H, T>(self, scope: Scope, path: &'static str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, S>,
        T: 'static,
    {
        self.add("GET", scope, path, axum::routing::get(handler))
    }

    pub fn post<H, T>(self, scope: Scope, path: &'static str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, S>,
        T: 'static,
    {
        self.add("POST", scope, path, axum::routing::post(handler))
    }

    pub fn put<H, T>(self, scope: Scope, path: &'static str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, S>,
        T: 'static,
    {
        self.add("PUT", scope, path, axum::routing::put(handler))
    }

    pub fn delete<H, T>(self, scope: Scope, path: &'static str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, S>,
        T: 'static,
    {
        self.add("DELETE", scope, path, axum::routing::delete(handler))
    }

    /// A route whose handler checks the key itself with [`Gate::admit`],
    /// because the key may come in the body (a tracking SDK's `writeKey`).
    /// The table records `method` with `scope`, so the route walk holds the
    /// handler to it; `route` may also answer methods that need no key,
    /// such as a CORS preflight.
    pub fn keyed_by_handler(
        mut self,
        method: &'static str,
        scope: Scope,
        path: &'static str,
        route: MethodRouter<S>,
    ) -> Self {
        self.table.push(RouteInfo {
            method,
            path,
            scope,
        });
        self.router = self.router.route(path, route);
        self
    }

    fn add(
        self,
        method: &'static str,
        scope: Scope,
        path: &'static str,
        route: MethodRouter<S>,
    ) -> Self {
        self.add_guarded(method, scope, path, route, None)
    }

    fn add_guarded(
        mut self,
        method: &'static str,
        scope: Scope,
        path: &'static str,
        route: MethodRouter<S>,
        page: Option<PageRefusal>,
    ) -> Self {
        self.table.push(RouteInfo {
            method,
            path,
            scope,
        });
        self.router = self.router.route(
            path,
            route.route_layer(axum::middleware::from_fn_with_state(
                Guard {
                    gate: self.gate.clone(),
                    scope,
                    page,
                },
                check,
            )),
        );
        self
    }

    /// The router, and the table of what it serves.
    pub fn finish(self) -> (Router<S>, RouteTable) {
        (self.router, self.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apikeys::{KeyBook, create};

    fn gate_with(
        keys: &[(Kind, Option<i64>, Option<i64>)],
        limits: RateLimits,
    ) -> (Gate, Vec<String>) {
        let mut book = KeyBook::default();
        let mut secrets = Vec::new();
        for (kind, expires, revoked) in keys {
            let made = create(*kind, "test", 0, *expires).unwrap();
            let info = match revoked {
                Some(at) => made.info.revoked(*at),
                None => made.info,
            };
            book.insert(info);
            secrets.push(made.secret);
        }
        let gate = Gate::new(
            AuthMode::Keys,
            Registry::fixed(book),
            limits,
            &crate::metrics::Registry::default(),
            "test",
        );
        (gate, secrets)
    }

    fn bearer(secret: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {secret}").parse().unwrap(),
        );
        headers
    }

    fn status<T>(result: Result<T, ApiError>) -> u16 {
        match result {
            Ok(_) => 200,
            Err(error) => error.into_response().status().as_u16(),
        }
    }

    #[test]
    fn keys_are_checked_for_presence_state_and_scope() {
        let (gate, secrets) = gate_with(
            &[
                (Kind::Write, None, None),
                (Kind::Read, Some(1_000), None),
                (Kind::Admin, None, Some(500)),
            ],
            RateLimits::default(),
        );
        let now = Instant::now();
        let at = |ms| now + Duration::from_millis(ms);
        let admit = |scope, headers: &HeaderMap, ms: u64| {
            status(gate.admit(scope, headers, None, at(ms), ms as i64))
        };
        assert_eq!(admit(Scope::Open, &HeaderMap::new(), 0), 200);
        assert_eq!(admit(Scope::Read, &HeaderMap::new(), 0), 401);
        assert_eq!(admit(Scope::Read, &bearer("rk_read_nope"), 0), 401);
        assert_eq!(admit(Scope::Write, &bearer(&secrets[0]), 0), 200);
        assert_eq!(admit(Scope::Read, &bearer(&secrets[0]), 0), 403);
        assert_eq!(admit(Scope::Read, &bearer(&secrets[1]), 999), 200);
        assert_eq!(
            admit(Scope::Read, &bearer(&secrets[1]), 1_000),
            401,
            "expired"
        );
        assert_eq!(admit(Scope::Admin, &bearer(&secrets[2]), 0), 401, "revoked");
        // The Basic user name, as tracking SDKs send the write key
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:", secrets[0]));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Basic {basic}").parse().unwrap(),
        );
        assert_eq!(admit(Scope::Write, &headers, 0), 200);
        headers.insert(header::AUTHORIZATION, "Basic %%%".parse().unwrap());
        assert_eq!(admit(Scope::Write, &headers, 0), 401);
    }

    #[test]
    fn a_key_over_its_rate_gets_429_with_the_wait_and_refills() {
        let limits = RateLimits {
            read_per_second: 10,
            ..RateLimits::default()
        };
        let (gate, secrets) = gate_with(&[(Kind::Read, None, None)], limits);
        let start = Instant::now();
        let headers = bearer(&secrets[0]);
        for _ in 0..10 {
            assert!(
                gate.admit(Scope::Read, &headers, None, start, 0)
                    .unwrap()
                    .is_some()
            );
        }
        let refusal = gate
            .admit(Scope::Read, &headers, None, start, 0)
            .unwrap_err();
        let response = refusal.into_response();
        assert_eq!(response.status().as_u16(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let later = start + Duration::from_millis(150);
        gate.admit(Scope::Read, &headers, None, later, 0).unwrap();
    }

    #[test]
    fn failed_attempts_are_limited_per_client_address() {
        let limits = RateLimits {
            failed_auth_per_minute: 3,
            ..RateLimits::default()
        };
        let (gate, secrets) = gate_with(&[(Kind::Read, None, None)], limits);
        let now = Instant::now();
        let guesser: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let other: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let wrong = bearer("rk_read_guess");
        for _ in 0..3 {
            assert_eq!(
                status(gate.admit(Scope::Read, &wrong, Some(guesser), now, 0)),
                401
            );
        }
        assert_eq!(
            status(gate.admit(Scope::Read, &wrong, Some(guesser), now, 0)),
            429
        );
        assert_eq!(
            status(gate.admit(Scope::Read, &wrong, Some(other), now, 0)),
            401
        );
        // A valid key from the same address still passes
        let right = bearer(&secrets[0]);
        assert_eq!(
            status(gate.admit(Scope::Read, &right, Some(guesser), now, 0)),
            200
        );
    }

    #[test]
    fn a_throttled_address_stays_throttled_when_many_others_fail() {
        let limits = RateLimits {
            failed_auth_per_minute: 1,
            ..RateLimits::default()
        };
        let (gate, _) = gate_with(&[(Kind::Read, None, None)], limits);
        let now = Instant::now();
        let wrong = bearer("rk_read_guess");
        let guesser: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        assert_eq!(
            status(gate.admit(Scope::Read, &wrong, Some(guesser), now, 0)),
            401
        );
        assert_eq!(
            status(gate.admit(Scope::Read, &wrong, Some(guesser), now, 0)),
            429
        );
        // Fill the table with addresses whose buckets refill before the
        // guesser's does
        for index in 0..(MAX_TRACKED_CLIENTS - 1) as u32 {
            let other = SocketAddr::from((std::net::Ipv4Addr::from(0x0b00_0000 + index), 1));
            let _ = gate.admit(
                Scope::Read,
                &wrong,
                Some(other),
                now - Duration::from_secs(120),
                0,
            );
        }
        let later = now + Duration::from_secs(1);
        assert_eq!(
            status(gate.admit(Scope::Read, &wrong, Some(guesser), later, 0)),
            429
        );
    }

    #[test]
    fn auth_off_lets_everything_through() {
        let gate = Gate::open_for_tests();
        assert_eq!(
            status(gate.admit(Scope::Admin, &HeaderMap::new(), None, Instant::now(), 0)),
            200
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5_000))]
        #[test]
        fn fuzz_any_authorization_header_is_a_clean_refusal(value in proptest::prelude::any::<Vec<u8>>()) {
            let (gate, _) = gate_with(&[(Kind::Admin, None, None)], RateLimits::default());
            let mut headers = HeaderMap::new();
            if let Ok(value) = axum::http::HeaderValue::from_bytes(&value) {
                headers.insert(header::AUTHORIZATION, value);
            }
            let code = status(gate.admit(Scope::Read, &headers, None, Instant::now(), 0));
            proptest::prop_assert!(code == 401 || code == 429, "{code}");
        }
    }
}
