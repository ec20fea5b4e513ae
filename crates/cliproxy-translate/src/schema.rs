//! JSON Schema reduced to the subset Gemini accepts (its OpenAPI 3.0 `Schema` object), for
//! tool parameters and `responseSchema`.
//!
//! Gemini rejects keywords other providers accept (`additionalProperties`, `$ref`, `const`,
//! `type: ["string", "null"]`, most `format`s), so a schema written for OpenAI or Anthropic
//! would fail there. The reduction keeps what Gemini understands, rewrites what has a
//! counterpart (a nullable type, `const`, `oneOf`, references) and drops the rest, which
//! only loosens the constraint the model sees; it never fails on a keyword it does not
//! know. What it refuses is what it cannot write at all: a recursive `$ref`, or references
//! that expand past a size bound (a small schema of references can stand for an
//! exponentially large tree).

use serde_json::{Map, Value};

use crate::Format;
use crate::error::{Error, Result};

/// How many references may be open, one inside another, while inlining.
const MAX_REF_DEPTH: usize = 32;
/// How deeply schemas may nest (after inlining), beyond which the schema is refused.
const MAX_DEPTH: usize = 96;
/// How many schema nodes the reduced schema may hold; references can multiply a schema.
const MAX_NODES: usize = 100_000;

/// The keywords Gemini's `Schema` carries, kept (after their values are reduced).
const KEPT: &[&str] = &[
    "type",
    "format",
    "description",
    "nullable",
    "enum",
    "properties",
    "required",
    "items",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "anyOf",
    "title",
    "propertyOrdering",
];

/// Reduces `schema` to Gemini's subset. `what` names the schema in errors, in the client's
/// terms (``tool `get_weather` parameters``, `response_format`).
pub(crate) fn reduce_for_gemini(schema: &Value, what: &str) -> Result<Value> {
    let mut reducer = Reducer { root: schema, what, refs: Vec::new(), nodes: 0 };
    reducer.reduce(schema, 0)
}

struct Reducer<'a> {
    root: &'a Value,
    what: &'a str,
    /// The references being inlined, outermost first: a reference to one of them is a cycle.
    refs: Vec<&'a str>,
    nodes: usize,
}

impl<'a> Reducer<'a> {
    fn refuse(&self, why: impl std::fmt::Display) -> Error {
        Error::unsupported(format!("{} ({why})", self.what), Format::Gemini)
    }

    fn reduce(&mut self, schema: &'a Value, depth: usize) -> Result<Value> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(self.refuse(format!("more than {MAX_NODES} schema nodes")));
        }
        if depth > MAX_DEPTH {
            return Err(self.refuse(format!("nested more than {MAX_DEPTH} levels deep")));
        }
        let Some(object) = schema.as_object() else {
            // `true`, `false` and other non-object schemas say nothing Gemini can carry.
            return Ok(Value::Object(Map::new()));
        };
        if let Some(reference) = object.get("$ref").and_then(Value::as_str) {
            return self.inline(reference, object, depth);
        }
        let mut out = Map::new();
        // `allOf` is merged into the schema itself: Gemini has no conjunction.
        if let Some(all) = object.get("allOf").and_then(Value::as_array) {
            for part in all {
                if let Value::Object(part) = self.reduce(part, depth + 1)? {
                    merge(&mut out, part);
                }
            }
        }
        for (key, value) in object {
            match key.as_str() {
                "type" => self.reduce_type(value, &mut out),
                "const" => {
                    out.insert("enum".to_owned(), Value::Array(vec![value.clone()]));
                }
                "properties" => {
                    let Some(properties) = value.as_object() else { continue };
                    let mut reduced = Map::with_capacity(properties.len());
                    for (name, property) in properties {
                        reduced.insert(name.clone(), self.reduce(property, depth + 1)?);
                    }
                    out.insert(key.clone(), Value::Object(reduced));
                }
                "items" => {
                    // A tuple form (`items: [...]`) has no counterpart: its first schema is
                    // the closest Gemini can say.
                    let item = match value {
                        Value::Array(items) => items.first().unwrap_or(&Value::Null),
                        other => other,
                    };
                    out.insert(key.clone(), self.reduce(item, depth + 1)?);
                }
                "anyOf" | "oneOf" => {
                    // `oneOf` becomes `anyOf`: Gemini has no exclusive choice, and the
                    // looser choice still admits every valid answer.
                    let Some(choices) = value.as_array() else { continue };
                    let mut reduced = Vec::with_capacity(choices.len());
                    for choice in choices {
                        reduced.push(self.reduce(choice, depth + 1)?);
                    }
                    out.insert("anyOf".to_owned(), Value::Array(reduced));
                }
                "format" => {
                    if let Some(format) = value.as_str()
                        && matches!(
                            format,
                            "enum" | "date-time" | "int32" | "int64" | "float" | "double"
                        )
                    {
                        out.insert(key.clone(), value.clone());
                    }
                }
                "allOf" => {}
                other if KEPT.contains(&other) => {
                    out.insert(key.clone(), value.clone());
                }
                // Everything else ($schema, additionalProperties, default, examples, …) is
                // dropped: it only narrows what the model may answer.
                _ => {}
            }
        }
        // Gemini rejects a `required` name that is not a property.
        if let (Some(Value::Array(required)), Some(Value::Object(properties))) =
            (out.get("required"), out.get("properties"))
        {
            let kept: Vec<Value> = required
                .iter()
                .filter(|name| name.as_str().is_some_and(|name| properties.contains_key(name)))
                .cloned()
                .collect();
            out.insert("required".to_owned(), Value::Array(kept));
        } else if !out.contains_key("properties") {
            out.remove("required");
        }
        Ok(Value::Object(out))
    }

    /// `type` as Gemini writes it: one upper-case name, with `null` folded into `nullable`
    /// and several names into an `anyOf`.
    fn reduce_type(&self, value: &Value, out: &mut Map<String, Value>) {
        match value {
            Value::String(name) => {
                if name == "null" {
                    out.insert("nullable".to_owned(), Value::Bool(true));
                } else {
                    out.insert("type".to_owned(), Value::String(name.to_ascii_uppercase()));
                }
            }
            Value::Array(names) => {
                let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
                if names.contains(&"null") {
                    out.insert("nullable".to_owned(), Value::Bool(true));
                }
                let real: Vec<&str> = names.into_iter().filter(|name| *name != "null").collect();
                match real.as_slice() {
                    [] => {}
                    [one] => {
                        out.insert("type".to_owned(), Value::String(one.to_ascii_uppercase()));
                    }
                    several => {
                        let choices = several
                            .iter()
                            .map(|name| {
                                let mut choice = Map::new();
                                choice.insert(
                                    "type".to_owned(),
                                    Value::String(name.to_ascii_uppercase()),
                                );
                                Value::Object(choice)
                            })
                            .collect();
                        out.insert("anyOf".to_owned(), Value::Array(choices));
                    }
                }
            }
            _ => {}
        }
    }

    /// Inlines a local reference (`#/$defs/…`, `#/definitions/…`, any JSON pointer into the
    /// root), refusing a cycle. Keywords beside the `$ref` (a description) are kept.
    fn inline(
        &mut self,
        reference: &'a str,
        beside: &'a Map<String, Value>,
        depth: usize,
    ) -> Result<Value> {
        if self.refs.contains(&reference) {
            return Err(self.refuse(format!("recursive $ref {reference}")));
        }
        if self.refs.len() >= MAX_REF_DEPTH {
            return Err(self.refuse(format!("more than {MAX_REF_DEPTH} nested $refs")));
        }
        let target = reference
            .strip_prefix('#')
            .and_then(|pointer| self.root.pointer(pointer))
            .ok_or_else(|| self.refuse(format!("$ref {reference} points nowhere in the schema")))?;
        self.refs.push(reference);
        let reduced = self.reduce(target, depth + 1);
        self.refs.pop();
        let mut reduced = match reduced? {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        // Annotations beside the reference (a description, `nullable`) apply to it; nested
        // schemas beside a `$ref` are ignored, as JSON Schema drafts before 2019 do.
        for (key, value) in beside {
            if KEPT.contains(&key.as_str())
                && !matches!(key.as_str(), "type" | "properties" | "items" | "anyOf" | "required")
            {
                reduced.insert(key.clone(), value.clone());
            }
        }
        Ok(Value::Object(reduced))
    }
}

/// A Gemini schema (its OpenAPI 3.0 subset: upper-case types, `nullable`) as the JSON
/// Schema the other formats take: types in lower case, `nullable` folded into the type,
/// Gemini-only keywords (`propertyOrdering`, `format: enum`) dropped. Rewritten in place,
/// since it was just parsed. Nesting is bounded by the parser's recursion limit; deeper
/// values (built by hand) are cut at [`MAX_DEPTH`].
pub(crate) fn from_gemini(mut schema: Value) -> Value {
    normalise_gemini(&mut schema, 0);
    schema
}

fn normalise_gemini(schema: &mut Value, depth: usize) {
    let Some(object) = schema.as_object_mut() else { return };
    if depth > MAX_DEPTH {
        object.clear();
        return;
    }
    let nullable = object.remove("nullable").and_then(|value| value.as_bool()) == Some(true);
    object.remove("propertyOrdering");
    if object.get("format").and_then(Value::as_str) == Some("enum") {
        object.remove("format");
    }
    if let Some(kind) = object.get_mut("type")
        && let Value::String(name) = kind
    {
        name.make_ascii_lowercase();
        if nullable {
            let name = std::mem::take(kind);
            *kind = Value::Array(vec![name, Value::String("null".to_owned())]);
        }
    }
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        for property in properties.values_mut() {
            normalise_gemini(property, depth + 1);
        }
    }
    if let Some(item) = object.get_mut("items") {
        normalise_gemini(item, depth + 1);
    }
    if let Some(Value::Array(choices)) = object.get_mut("anyOf") {
        for choice in choices {
            normalise_gemini(choice, depth + 1);
        }
    }
}

/// Merges one `allOf` member into the schema being built: properties and `required` are
/// united, other keywords keep the first value.
fn merge(into: &mut Map<String, Value>, part: Map<String, Value>) {
    for (key, value) in part {
        match (key.as_str(), into.get_mut(&key), value) {
            ("properties", Some(Value::Object(have)), Value::Object(more)) => {
                have.extend(more);
            }
            ("required", Some(Value::Array(have)), Value::Array(more)) => {
                for name in more {
                    if !have.contains(&name) {
                        have.push(name);
                    }
                }
            }
            (_, Some(_), _) => {}
            (_, None, value) => {
                into.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reduce(schema: Value) -> Result<Value> {
        reduce_for_gemini(&schema, "tool `t` parameters")
    }

    #[test]
    fn keeps_the_subset_and_drops_the_rest() {
        let out = reduce(json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object", "title": "T", "description": "d",
            "additionalProperties": false, "default": {}, "examples": [{}],
            "properties": {
                "city": {"type": "string", "minLength": 1, "maxLength": 9, "pattern": "^a",
                         "format": "uri", "default": "x"},
                "when": {"type": "string", "format": "date-time"},
                "n": {"type": "integer", "minimum": 0, "maximum": 9, "format": "int32"},
                "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]},
                         "minItems": 1, "maxItems": 3, "uniqueItems": true}
            },
            "required": ["city", "ghost"],
            "propertyOrdering": ["city", "n"]
        }))
        .unwrap();
        assert_eq!(
            out,
            json!({
                "type": "OBJECT", "title": "T", "description": "d",
                "properties": {
                    "city": {"type": "STRING", "minLength": 1, "maxLength": 9, "pattern": "^a"},
                    "when": {"type": "STRING", "format": "date-time"},
                    "n": {"type": "INTEGER", "minimum": 0, "maximum": 9, "format": "int32"},
                    "tags": {"type": "ARRAY", "items": {"type": "STRING", "enum": ["a", "b"]},
                             "minItems": 1, "maxItems": 3}
                },
                "required": ["city"],
                "propertyOrdering": ["city", "n"]
            })
        );
    }

    #[test]
    fn a_nullable_type_list_becomes_type_and_nullable() {
        assert_eq!(
            reduce(json!({"type": ["string", "null"]})).unwrap(),
            json!({"type": "STRING", "nullable": true})
        );
        assert_eq!(
            reduce(json!({"type": ["string", "integer"]})).unwrap(),
            json!({"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]})
        );
        assert_eq!(reduce(json!({"type": "null"})).unwrap(), json!({"nullable": true}));
    }

    #[test]
    fn const_becomes_a_one_value_enum_and_one_of_becomes_any_of() {
        assert_eq!(
            reduce(json!({"type": "string", "const": "on"})).unwrap(),
            json!({"type": "STRING", "enum": ["on"]})
        );
        assert_eq!(
            reduce(
                json!({"oneOf": [{"type": "string"}, {"type": "number", "exclusiveMinimum": 0}]})
            )
            .unwrap(),
            json!({"anyOf": [{"type": "STRING"}, {"type": "NUMBER"}]})
        );
    }

    #[test]
    fn all_of_is_merged() {
        assert_eq!(
            reduce(json!({"allOf": [
                {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"properties": {"b": {"type": "number"}}, "required": ["b"]}
            ]}))
            .unwrap(),
            json!({"type": "OBJECT",
                   "properties": {"a": {"type": "STRING"}, "b": {"type": "NUMBER"}},
                   "required": ["a", "b"]})
        );
    }

    #[test]
    fn refs_are_inlined_from_defs_and_definitions() {
        let out = reduce(json!({
            "type": "object",
            "properties": {
                "home": {"$ref": "#/$defs/Address", "description": "where"},
                "work": {"$ref": "#/definitions/Address"}
            },
            "$defs": {"Address": {"type": "object", "properties": {"street": {"type": "string"}}}},
            "definitions": {"Address": {"type": "object", "properties": {"zip": {"type": "string"}}}}
        }))
        .unwrap();
        assert_eq!(
            out,
            json!({"type": "OBJECT", "properties": {
                "home": {"type": "OBJECT", "properties": {"street": {"type": "STRING"}},
                         "description": "where"},
                "work": {"type": "OBJECT", "properties": {"zip": {"type": "STRING"}}}
            }})
        );
    }

    #[test]
    fn a_cyclic_ref_is_refused_naming_the_tool() {
        let error = reduce(json!({
            "type": "object",
            "properties": {"root": {"$ref": "#/$defs/Node"}},
            "$defs": {"Node": {"type": "object", "properties": {
                "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}}}
        }))
        .unwrap_err();
        assert_eq!(
            error,
            Error::unsupported("tool `t` parameters (recursive $ref #/$defs/Node)", Format::Gemini)
        );
        // A reference to the root itself is a cycle too.
        let error =
            reduce(json!({"type": "object", "properties": {"me": {"$ref": "#"}}})).unwrap_err();
        assert!(error.to_string().contains("recursive $ref #"), "{error}");
        let error = reduce(json!({"$ref": "#/$defs/A", "$defs": {"A": {"$ref": "#/$defs/A"}}}))
            .unwrap_err();
        assert!(error.to_string().contains("recursive $ref #/$defs/A"), "{error}");
        let error = reduce(json!({"$ref": "#/$defs/missing"})).unwrap_err();
        assert!(error.to_string().contains("points nowhere"), "{error}");
    }

    #[test]
    fn an_exponential_ref_tree_is_refused_not_expanded() {
        // Each level refers to the next ten times: 10^20 nodes if expanded.
        let mut defs = Map::new();
        for level in 0..20 {
            let next = json!({"$ref": format!("#/$defs/L{}", level + 1)});
            let properties: Map<String, Value> =
                (0..10).map(|i| (format!("p{i}"), next.clone())).collect();
            defs.insert(format!("L{level}"), json!({"type": "object", "properties": properties}));
        }
        defs.insert("L20".to_owned(), json!({"type": "string"}));
        let error = reduce(json!({"$ref": "#/$defs/L0", "$defs": defs})).unwrap_err();
        assert!(error.to_string().contains("schema nodes"), "{error}");
    }

    #[test]
    fn a_gemini_schema_reads_as_json_schema() {
        assert_eq!(
            from_gemini(json!({
                "type": "OBJECT", "propertyOrdering": ["a"],
                "properties": {
                    "a": {"type": "STRING", "nullable": true, "format": "enum", "enum": ["x"]},
                    "b": {"type": "ARRAY", "items": {"type": "INTEGER", "format": "int64"}},
                    "c": {"anyOf": [{"type": "NUMBER"}, {"type": "BOOLEAN"}]}
                },
                "required": ["a"]
            })),
            json!({
                "type": "object",
                "properties": {
                    "a": {"type": ["string", "null"], "enum": ["x"]},
                    "b": {"type": "array", "items": {"type": "integer", "format": "int64"}},
                    "c": {"anyOf": [{"type": "number"}, {"type": "boolean"}]}
                },
                "required": ["a"]
            })
        );
        // Reduction then reading back keeps what both sides share.
        let schema = json!({"type": "object", "properties": {"n": {"type": ["integer", "null"]}}, "required": ["n"]});
        assert_eq!(from_gemini(reduce(schema.clone()).unwrap()), schema);
    }

    #[test]
    fn hostile_sizes_are_handled() {
        // Ten thousand properties pass through, linearly.
        let properties: Map<String, Value> =
            (0..10_000).map(|i| (format!("p{i}"), json!({"type": "string"}))).collect();
        let out = reduce(json!({"type": "object", "properties": properties})).unwrap();
        assert_eq!(out["properties"].as_object().map(Map::len), Some(10_000));
        // Deep nesting (deeper than any parsed body can be) is refused, not a stack overflow.
        let mut deep = json!({"type": "string"});
        for _ in 0..200 {
            deep = json!({"type": "array", "items": deep});
        }
        let error = reduce(deep).unwrap_err();
        assert!(error.to_string().contains("nested more than"), "{error}");
        // Nonsense values are ignored rather than fatal.
        assert_eq!(
            reduce(json!({"type": 5, "properties": [1], "items": true, "anyOf": "x"})).unwrap(),
            json!({"items": {}})
        );
        assert_eq!(reduce(json!(true)).unwrap(), json!({}));
    }
}
