//! HTTP to the services' admin APIs: a request with the admin key, its
//! answer deserialized, and a refusal turned into an error that says what
//! the service said (and, for a missing or wrong key, what to do).

use std::time::Duration;

use anyhow::{Context as _, bail};
use rapport_common::admin::ErrorAnswer;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The admin API of one service.
pub(crate) struct AdminApi {
    base: String,
    agent: ureq::Agent,
    /// `Bearer <key>`, when a key was given.
    authorization: Option<String>,
}

/// The two services rapportctl asks.
pub(crate) struct Services {
    /// The projector's query API, which serves its admin endpoints.
    pub(crate) projector: AdminApi,
    pub(crate) identity: AdminApi,
}

impl Services {
    /// Each request carries `key` and gives up after `timeout`.
    pub(crate) fn new(
        projector_url: &str,
        identity_url: &str,
        key: Option<&str>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let authorization = bearer(key)?;
        Ok(Self {
            projector: AdminApi::new(projector_url, authorization.clone(), timeout),
            identity: AdminApi::new(identity_url, authorization, timeout),
        })
    }
}

/// The Authorization header for `key`. An empty key is none (an unset
/// variable in a script); space around it is dropped (a line read from a
/// file).
fn bearer(key: Option<&str>) -> anyhow::Result<Option<String>> {
    let Some(key) = key.map(str::trim).filter(|key| !key.is_empty()) else {
        return Ok(None);
    };
    if !key.bytes().all(|byte| byte.is_ascii_graphic()) {
        bail!(
            "--key (or RAPPORT_KEY) is not an API key: a key is one word of ASCII letters, digits and _"
        );
    }
    Ok(Some(format!("Bearer {key}")))
}

impl Services {
    /// The admin API at `base` (another projector process), with the same
    /// key and timeout.
    pub(crate) fn at(&self, base: &str) -> AdminApi {
        AdminApi {
            base: base.trim_end_matches('/').to_owned(),
            agent: self.projector.agent.clone(),
            authorization: self.projector.authorization.clone(),
        }
    }
}

impl AdminApi {
    fn new(base: &str, authorization: Option<String>, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            // A refusal's body says why; it is read, not turned into a bare status.
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            agent,
            authorization,
        }
    }

    pub(crate) fn get<Answer: DeserializeOwned>(&self, path: &str) -> anyhow::Result<Answer> {
        let url = self.url(path);
        let response = self.authorized(self.agent.get(&url)).call();
        self.answer(&url, response)
    }

    /// POSTs `body` as JSON, or nothing.
    pub(crate) fn post<Answer: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<Answer> {
        let url = self.url(path);
        let request = self.authorized(self.agent.post(&url));
        let response = match body {
            Some(body) => request.send_json(body),
            None => request.send_empty(),
        };
        self.answer(&url, response)
    }

    /// PUTs `body` as JSON.
    pub(crate) fn put<Answer: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<Answer> {
        let url = self.url(path);
        let response = self.authorized(self.agent.put(&url)).send_json(body);
        self.answer(&url, response)
    }

    /// The base URL.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    pub(crate) fn delete<Answer: DeserializeOwned>(&self, path: &str) -> anyhow::Result<Answer> {
        let url = self.url(path);
        let response = self.authorized(self.agent.delete(&url)).call();
        self.answer(&url, response)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorized<Body>(&self, request: ureq::RequestBuilder<Body>) -> ureq::RequestBuilder<Body> {
        match &self.authorization {
            Some(authorization) => request.header("authorization", authorization),
            None => request,
        }
    }

    /// The answer to a request to `url`, or an error naming what was refused and why.
    fn answer<Answer: DeserializeOwned>(
        &self,
        url: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Answer> {
        let mut response = response.with_context(|| format!("asking {url}"))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the answer of {url}"))?;
        if status >= 400 {
            bail!(
                "{url} answered {status}: {}",
                refused(status, &text, self.authorization.is_some())
            );
        }
        serde_json::from_str(&text).with_context(|| format!("reading the answer of {url}"))
    }
}

/// Where `make run` keeps its keys, for the hints below.
const KEY_HINT: &str = "pass --key or set RAPPORT_KEY (./data/keys.env has one after make run)";

/// What a refusal with `status` and body `text` means to the operator: what
/// the service said, and for a key that is missing, unknown, revoked or
/// expired (401) or of the wrong kind (403) what to do about it.
fn refused(status: u16, text: &str, key_sent: bool) -> String {
    match (status, key_sent) {
        (401, false) => format!("the service wants an admin key: {KEY_HINT}"),
        (401, true) => format!(
            "{}; the service wants a live admin key: {KEY_HINT}",
            refusal(text)
        ),
        (403, _) => format!(
            "{}; the key's kind is wrong: rapportctl needs an admin key (./data/keys.env has one after make run; `rapportctl keys create --kind admin` makes one)",
            refusal(text)
        ),
        _ => refusal(text),
    }
}

/// What a refusal's body says: its error and the rules broken, or the body
/// itself when it is not the services' error shape.
fn refusal(text: &str) -> String {
    match serde_json::from_str::<ErrorAnswer>(text) {
        Ok(refused) => {
            let said = std::iter::once(refused.error.as_str())
                .chain(refused.details.iter().map(|detail| detail.message.as_str()));
            said.collect::<Vec<_>>().join("; ")
        }
        Err(_) => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_says_the_error_and_each_broken_rule() {
        assert_eq!(
            refusal(
                r#"{"error": "bad version", "details": [{"field": "version", "message": "too long"}, {"field": "version", "message": "no spaces"}]}"#
            ),
            "bad version; too long; no spaces"
        );
        assert_eq!(
            refusal(r#"{"error": "version v1 is live"}"#),
            "version v1 is live"
        );
        assert_eq!(refusal("Bad Gateway"), "Bad Gateway");
    }

    #[test]
    fn a_missing_or_wrong_key_says_what_to_do() {
        let without = refused(401, r#"{"error": "this route needs an API key"}"#, false);
        assert_eq!(
            without,
            "the service wants an admin key: pass --key or set RAPPORT_KEY (./data/keys.env has one after make run)"
        );
        let revoked = refused(401, r#"{"error": "API key 0123 was revoked"}"#, true);
        assert!(
            revoked.starts_with("API key 0123 was revoked; ") && revoked.contains("--key"),
            "{revoked}"
        );
        let wrong_kind = refused(
            403,
            r#"{"error": "this route needs scope admin (a admin or admin key); key 0123 is a read key"}"#,
            true,
        );
        assert!(
            wrong_kind.contains("is a read key") && wrong_kind.contains("kind is wrong"),
            "{wrong_kind}"
        );
        assert_eq!(
            refused(404, r#"{"error": "no version v9"}"#, true),
            "no version v9"
        );
    }

    #[test]
    fn a_key_is_sent_as_bearer_trimmed_and_an_empty_one_is_none() {
        assert_eq!(bearer(None).unwrap(), None);
        assert_eq!(bearer(Some("")).unwrap(), None);
        assert_eq!(bearer(Some("  \n")).unwrap(), None);
        assert_eq!(
            bearer(Some("rk_admin_00ff\n")).unwrap().as_deref(),
            Some("Bearer rk_admin_00ff")
        );
        let error = bearer(Some("rk_admin 00ff")).unwrap_err().to_string();
        assert!(error.contains("--key"), "{error}");
    }
}
