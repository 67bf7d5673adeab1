//! The check that a service's `/openapi.json` describes exactly what its
//! router serves: every route of the table and nothing else, each with the
//! security its scope needs, every `$ref` resolving, and every example
//! given for a schema matching that schema's declared types.
//!
//! The types are checked by [`matches_schema`], a small part of JSON
//! Schema written here: the `jsonschema` crate (0.61, default features
//! off) brings 78 crates and about a minute of CPU to a clean build, for
//! a test that needs only the keywords the derived schemas use.

use std::collections::BTreeSet;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use rapport_common::apikeys::{RouteTable, Scope};
use serde_json::Value;
use tower::ServiceExt as _;

/// Fetches `/openapi.json` from `router` (no key) and checks it against
/// `table`; returns the document for further checks.
pub async fn describes_every_route(router: Router, table: &RouteTable) -> Value {
    let response = router
        .oneshot(
            Request::get(rapport_common::openapi::PATH)
                .body(Body::empty())
                .expect("a request"),
        )
        .await
        .expect("an answer");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "/openapi.json needs no key"
    );
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a body");
    let document: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(document["openapi"], "3.1.0", "OpenAPI 3.1");
    let api: utoipa::openapi::OpenApi =
        serde_json::from_value(document.clone()).expect("an OpenAPI document");
    let mismatches = rapport_common::openapi::mismatches(&api, table);
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    for route in table {
        let operation = &document["paths"][route.path][route.method.to_ascii_lowercase()];
        let security = &operation["security"];
        match route.scope {
            Scope::Open => assert_eq!(
                security,
                &serde_json::json!([{}]),
                "{} {}",
                route.method,
                route.path
            ),
            scope => {
                assert_eq!(
                    security[0][rapport_common::openapi::KEY_SCHEME],
                    serde_json::json!([scope.as_str()]),
                    "{} {}: {security}",
                    route.method,
                    route.path
                );
                for status in ["401", "403", "429"] {
                    assert!(
                        operation["responses"].get(status).is_some(),
                        "{} {} does not describe {status}",
                        route.method,
                        route.path
                    );
                }
            }
        }
        // Every path placeholder is a described path parameter
        for placeholder in placeholders(route.path) {
            let described = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|parameter| parameter["in"] == "path" && parameter["name"] == placeholder);
            assert!(
                described,
                "{} {}: {{{placeholder}}} is not described",
                route.method, route.path
            );
        }
    }
    let schemas = document["components"]["schemas"].clone();
    let mut references = BTreeSet::new();
    references_in(&document, &mut references);
    for reference in &references {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("an unexpected reference {reference}"));
        assert!(schemas.get(name).is_some(), "{reference} does not resolve");
    }
    for (name, schema) in schemas.as_object().into_iter().flatten() {
        for example in schema["examples"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(schema.get("example"))
        {
            if let Err(error) = matches_schema(example, schema, &schemas) {
                panic!("the example of {name} does not match it: {error}");
            }
        }
    }
    document
}

/// Whether `body`, answered with `status` to `method` on the route
/// `template` (with its `{placeholders}`), has the types `document`
/// describes for that answer as JSON.
pub fn answer_matches(
    document: &Value,
    method: &str,
    template: &str,
    status: u16,
    body: &Value,
) -> Result<(), String> {
    let response =
        &document["paths"][template][method.to_ascii_lowercase()]["responses"][status.to_string()];
    let schema = &response["content"]["application/json"]["schema"];
    if schema.is_null() {
        return Err(format!(
            "{method} {template} describes no JSON answer with {status}"
        ));
    }
    matches_schema(body, schema, &document["components"]["schemas"])
        .map_err(|error| format!("{method} {template} {status}: {error}"))
}

fn placeholders(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

fn references_in(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                if key == "$ref" {
                    if let Some(reference) = value.as_str() {
                        found.insert(reference.to_owned());
                    }
                } else {
                    references_in(value, found);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references_in(item, found)),
        _ => {}
    }
}

/// Whether `value` has the types `schema` declares: `type` (one or a
/// list), `properties` and `required`, `items`, `$ref`, `oneOf`/`anyOf`,
/// `allOf`, `enum`. A deliberately small part of JSON Schema: what the derived
/// schemas use.
pub fn matches_schema(value: &Value, schema: &Value, schemas: &Value) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return matches_schema(value, &schemas[name], schemas);
    }
    for part in schema["allOf"].as_array().into_iter().flatten() {
        matches_schema(value, part, schemas)?;
    }
    for combinator in ["oneOf", "anyOf"] {
        if let Some(options) = schema[combinator].as_array() {
            return options
                .iter()
                .any(|option| matches_schema(value, option, schemas).is_ok())
                .then_some(())
                .ok_or_else(|| format!("{value} matches none of {combinator}"));
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return Err(format!("{value} is not one of {allowed:?}"));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() {
        let kind = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let fits = types.contains(&kind) || (kind == "integer" && types.contains(&"number"));
        if !fits {
            return Err(format!("{value} is {kind}, not {types:?}"));
        }
    }
    if let Value::Object(fields) = value {
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().unwrap_or_default();
            if !fields.contains_key(name) {
                return Err(format!("{value} lacks {name}"));
            }
        }
        for (name, field) in fields {
            if let Some(property) = schema["properties"].get(name) {
                matches_schema(field, property, schemas)
                    .map_err(|error| format!("{name}: {error}"))?;
            } else if schema["additionalProperties"] == Value::Bool(false) {
                return Err(format!("{name} is not a property"));
            } else if schema["additionalProperties"].is_object() {
                matches_schema(field, &schema["additionalProperties"], schemas)
                    .map_err(|error| format!("{name}: {error}"))?;
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for item in items {
            matches_schema(item, item_schema, schemas)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_checked_against_the_types_a_schema_declares() {
        let schemas = json!({"Id": {"type": "string"}});
        let schema = json!({
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"$ref": "#/components/schemas/Id"}, "n": {"type": ["integer", "null"]}},
        });
        assert!(matches_schema(&json!({"id": "a", "n": 3}), &schema, &schemas).is_ok());
        assert!(matches_schema(&json!({"id": "a", "n": null}), &schema, &schemas).is_ok());
        assert!(matches_schema(&json!({"n": 3}), &schema, &schemas).is_err());
        assert!(matches_schema(&json!({"id": 1}), &schema, &schemas).is_err());
        assert!(matches_schema(&json!({"id": "a", "n": 1.5}), &schema, &schemas).is_err());
        assert!(
            matches_schema(
                &json!(["a"]),
                &json!({"type": "array", "items": {"type": "integer"}}),
                &schemas
            )
            .is_err()
        );
        assert_eq!(placeholders("/v1/a/{id}/b/{version}"), ["id", "version"]);
    }
}
