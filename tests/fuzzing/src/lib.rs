//! What the fuzz-style properties share. A property whose name holds
//! `fuzz` feeds a parser or a router any input and checks that it refuses
//! or reads it, never panics; `make test` runs 20 000 cases of each and
//! `make fuzz` as many as `RAPPORT_FUZZ_CASES` says.
//!
//! [`every_route_checks_its_scope`] walks a service's route table, and
//! [`describes_every_route`] holds its `/openapi.json` against that table.

pub mod described;
pub mod scopes;
pub use described::{answer_matches, describes_every_route};
pub use scopes::every_route_checks_its_scope;

use proptest::test_runner::Config;

/// Cases per fuzz-style property when `RAPPORT_FUZZ_CASES` is not set.
pub const DEFAULT_CASES: u32 = 20_000;

/// The proptest configuration of a fuzz-style property.
pub fn config() -> Config {
    let cases = std::env::var("RAPPORT_FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    Config::with_cases(cases)
}

/// `text` as a URI path segment or query value: every byte but ASCII
/// letters and digits as `%XX`, so that the text arrives as it is. Text
/// made only of `%XX` escapes is kept as it stands, which can decode to
/// bytes that are no UTF-8.
pub fn uri_text(text: &str) -> String {
    if text.starts_with('%')
        && text
            .bytes()
            .all(|byte| byte == b'%' || byte.is_ascii_hexdigit())
    {
        return text.to_owned();
    }
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Any JSON value, three levels deep at most: what a fuzz property puts in
/// a field of an otherwise valid body. Strings include timestamp-like
/// text, so that time parsers see near misses as well as noise.
pub fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("a finite number", |number| {
            serde_json::Number::from_f64(number).map(Value::Number)
        }),
        any::<String>().prop_map(Value::String),
        "[0-9T:.Z+ -]{0,30}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z_]{1,12}", inner, 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_byte_by_byte_and_escapes_pass() {
        assert_eq!(uri_text("a b/é-1"), "a%20b%2F%C3%A9%2D1");
        assert_eq!(uri_text("%FF%fe"), "%FF%fe");
        assert_eq!(uri_text("%zz"), "%25zz");
    }
}
