//! HTTP to the services' admin APIs: a request, its answer deserialized,
//! and a refusal turned into an error that says what the service said.

use std::time::Duration;

use anyhow::{Context as _, bail};
use rapport_common::admin::ErrorAnswer;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The admin API of one service.
pub(crate) struct AdminApi {
    base: String,
    agent: ureq::Agent,
}

/// The two services rapportctl asks.
pub(crate) struct Services {
    /// The projector's query API, which serves its admin endpoints.
    pub(crate) projector: AdminApi,
    pub(crate) identity: AdminApi,
}

impl Services {
    /// Each request gives up after `timeout`.
    pub(crate) fn new(projector_url: &str, identity_url: &str, timeout: Duration) -> Self {
        Self {
            projector: AdminApi::new(projector_url, timeout),
            identity: AdminApi::new(identity_url, timeout),
        }
    }
}

impl AdminApi {
    fn new(base: &str, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            // A refusal's body says why; it is read, not turned into a bare status.
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            agent,
        }
    }

    pub(crate) fn get<Answer: DeserializeOwned>(&self, path: &str) -> anyhow::Result<Answer> {
        let url = self.url(path);
        let response = self.agent.get(&url).call();
        answer(&url, response)
    }

    /// POSTs `body` as JSON, or nothing.
    pub(crate) fn post<Answer: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<Answer> {
        let url = self.url(path);
        let request = self.agent.post(&url);
        let response = match body {
            Some(body) => request.send_json(body),
            None => request.send_empty(),
        };
        answer(&url, response)
    }

    pub(crate) fn delete<Answer: DeserializeOwned>(&self, path: &str) -> anyhow::Result<Answer> {
        let url = self.url(path);
        let response = self.agent.delete(&url).call();
        answer(&url, response)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// The answer to a request to `url`, or an error naming what was refused and why.
fn answer<Answer: DeserializeOwned>(
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
        bail!("{url} answered {status}: {}", refusal(&text));
    }
    serde_json::from_str(&text).with_context(|| format!("reading the answer of {url}"))
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
}
