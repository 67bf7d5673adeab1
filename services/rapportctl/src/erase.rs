//! `rapportctl erase`: erase a person by one of their identifiers, or show
//! an erasure. Identity does the work (`POST /v1/admin/erasures`); this
//! says what it did.

use rapport_common::admin::ErasureShown;

use crate::client::Services;

/// Which identifier a bare value is: an email has an `@`, a phone is
/// digits with at most `+`, spaces, dots, dashes and parentheses; anything
/// else is a customer id.
pub(crate) fn kind_of(value: &str) -> &'static str {
    let value = value.trim();
    let phone_like = value.chars().any(|char| char.is_ascii_digit())
        && value
            .chars()
            .all(|char| char.is_ascii_digit() || " +-.()".contains(char));
    if value.contains('@') {
        "email"
    } else if phone_like && value.starts_with('+') {
        "phone"
    } else {
        "customer_id"
    }
}

fn print(erasure: &ErasureShown) {
    println!("erasure {}: {}", erasure.erasure_id, erasure.state);
    println!("  requested at  {}", erasure.requested_at);
    if let Some(done_at) = &erasure.done_at {
        println!("  done at       {done_at}");
    }
    println!("  person        {}", erasure.person);
    println!(
        "  destroyed     {} data keys of {} identifiers",
        erasure.keys_destroyed, erasure.identifiers
    );
}

pub(crate) fn erase(services: &Services, value: &str, kind: Option<&str>) -> anyhow::Result<()> {
    let kind = kind.unwrap_or_else(|| kind_of(value));
    let body = serde_json::json!({ kind: value });
    let erasure: ErasureShown = services.identity.post("/v1/admin/erasures", Some(&body))?;
    print(&erasure);
    eprintln!(
        "the person's personal fields read [erased] everywhere within seconds; their orders stay"
    );
    Ok(())
}

pub(crate) fn show(services: &Services, id: &str) -> anyhow::Result<()> {
    let erasure: ErasureShown = services.identity.get(&format!("/v1/admin/erasures/{id}"))?;
    print(&erasure);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_value_is_read_as_the_identifier_it_looks_like() {
        assert_eq!(kind_of("ada@example.com"), "email");
        assert_eq!(kind_of("+44 20 7946 0000"), "phone");
        assert_eq!(kind_of("c-00042"), "customer_id");
        assert_eq!(kind_of("42"), "customer_id", "a bare number is a shop's id");
    }
}
