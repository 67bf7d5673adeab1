//! The walk over a service's routes that proves each one asks for the key
//! its scope needs: none, an unknown, a revoked or an expired key get 401;
//! a key of a kind the scope does not grant gets 403; a granted kind gets
//! past the gate (whatever the handler then answers).

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use rapport_common::apikeys::{Gate, KeyBook, Kind, RouteTable, Scope, create};
use tower::ServiceExt as _;

/// Builds the router with a gate that knows one key of each kind plus a
/// revoked and an expired one, and checks every route in its table.
/// `routes` builds the service's router around the gate it is given.
pub async fn every_route_checks_its_scope(routes: impl Fn(&Gate) -> (Router, RouteTable)) {
    let mut book = KeyBook::default();
    let mut live = Vec::new();
    for kind in Kind::ALL {
        let made = create(kind, "walk", 0, None).expect("a key");
        book.insert(made.info);
        live.push((kind, made.secret));
    }
    let revoked = create(Kind::Admin, "revoked", 0, None).expect("a key");
    book.insert(revoked.info.revoked(1));
    let expired = create(Kind::Admin, "expired", 0, Some(1)).expect("a key");
    book.insert(expired.info);
    let gate = Gate::new(
        rapport_common::apikeys::AuthMode::Keys,
        rapport_common::apikeys::Registry::fixed(book),
        rapport_common::apikeys::RateLimits {
            write_per_second: 1_000_000,
            read_per_second: 1_000_000,
            admin_per_second: 1_000_000,
            service_per_second: 1_000_000,
            failed_auth_per_minute: 1_000_000,
        },
        &rapport_common::metrics::Registry::default(),
        "walk",
    );
    let (router, table) = routes(&gate);
    assert!(!table.is_empty(), "the service declares no routes");
    for route in &table {
        let path = concrete(route.path);
        let status = |secret: Option<&str>| {
            let router = router.clone();
            let mut request = Request::builder().method(route.method).uri(&path);
            if let Some(secret) = secret {
                request = request.header(header::AUTHORIZATION, format!("Bearer {secret}"));
            }
            let request = request.body(Body::empty()).expect("a request");
            async move {
                router
                    .oneshot(request)
                    .await
                    .expect("infallible")
                    .status()
                    .as_u16()
            }
        };
        let what = format!("{} {} ({:?})", route.method, route.path, route.scope);
        if route.scope == Scope::Open {
            let answer = status(None).await;
            assert!(
                answer != 401 && answer != 403,
                "{what} needs no key, got {answer}"
            );
            continue;
        }
        for (secret, case) in [
            (None, "no key"),
            (Some("rk_admin_0000"), "an unknown key"),
            (Some(revoked.secret.as_str()), "a revoked key"),
            (Some(expired.secret.as_str()), "an expired key"),
        ] {
            assert_eq!(status(secret).await, 401, "{what} with {case}");
        }
        for (kind, secret) in &live {
            let answer = status(Some(secret)).await;
            if kind.grants(route.scope) {
                assert!(
                    answer != 401 && answer != 403,
                    "{what} refused a {kind:?} key with {answer}"
                );
            } else {
                assert_eq!(answer, 403, "{what} with a {kind:?} key");
            }
        }
    }
}

/// The route's path with each `{placeholder}` filled in.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        match rest[open..].find('}') {
            Some(close) => {
                out.push('x');
                rest = &rest[open + close + 1..];
            }
            None => {
                rest = &rest[open..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}
