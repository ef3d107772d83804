//! A compiled validator for the subset of JSON Schema (draft 2020-12) the tool contracts use.
//!
//! Supported keywords: `type` (one or a list), `properties`, `required`,
//! `additionalProperties` (boolean or schema), `items`, `enum`, `const`, `minimum`, `maximum`,
//! `minLength`, `maxLength`, `pattern`, `minItems`, `maxItems`. Annotation keywords
//! (`description`, `default`, `format`, `title`, `examples`) are ignored. Any other keyword is a
//! programming error in a contract and is rejected when the schema is compiled, so a contract
//! can never promise a check that is not made.
//!
//! Validation is a single walk over the value with no allocation on success.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{LazyLock, Mutex, PoisonError};

use regex::Regex;
use serde_json::{Map, Value};

/// Distinct patterns kept compiled for the process, at most. The 19 contracts repeat a handful
/// of patterns (`^[^-]`, hex digests), and a negated class compiles a large UTF-8 automaton:
/// compiling each one anew was about a quarter of a CLI run's CPU time (perf).
const PATTERN_CACHE_MAX: usize = 256;

/// `pattern` compiled, from the process-wide cache when it was compiled before.
fn pattern(p: &str) -> Result<Regex, regex::Error> {
    static CACHE: LazyLock<Mutex<HashMap<String, Regex>>> = LazyLock::new(Default::default);
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(r) = cache.get(p) {
        return Ok(r.clone());
    }
    let r = Regex::new(p)?;
    if cache.len() < PATTERN_CACHE_MAX {
        cache.insert(p.to_owned(), r.clone());
    }
    Ok(r)
}

/// A JSON type name as used by `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Null,
    Boolean,
    Integer,
    Number,
    String,
    Array,
    Object,
}

impl Ty {
    fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "null" => Ty::Null,
            "boolean" => Ty::Boolean,
            "integer" => Ty::Integer,
            "number" => Ty::Number,
            "string" => Ty::String,
            "array" => Ty::Array,
            "object" => Ty::Object,
            _ => return None,
        })
    }

    fn matches(self, v: &Value) -> bool {
        match self {
            Ty::Null => v.is_null(),
            Ty::Boolean => v.is_boolean(),
            // Written as an integer, as serde's integer fields (u32, u64, usize) insist: `4.0`
            // or `4E6` is refused here rather than by the tool's Input after the contract passed.
            Ty::Integer => v.is_i64() || v.is_u64(),
            Ty::Number => v.is_number(),
            Ty::String => v.is_string(),
            Ty::Array => v.is_array(),
            Ty::Object => v.is_object(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Ty::Null => "null",
            Ty::Boolean => "boolean",
            Ty::Integer => "integer",
            Ty::Number => "number",
            Ty::String => "string",
            Ty::Array => "array",
            Ty::Object => "object",
        }
    }
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Additional properties: allowed, refused, or checked against a schema.
#[derive(Debug)]
enum Extra {
    Allow,
    Deny,
    Schema(Box<Compiled>),
}

/// A schema compiled for fast validation.
#[derive(Debug)]
pub struct Compiled {
    types: Vec<Ty>,
    properties: BTreeMap<String, Compiled>,
    required: Vec<String>,
    extra: Extra,
    items: Option<Box<Compiled>>,
    enumeration: Option<Vec<Value>>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    pattern: Option<Regex>,
    min_items: Option<usize>,
    max_items: Option<usize>,
}

/// Why a value does not match: the JSON pointer of the offending place and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer to the value, `""` for the root; a missing field names the field itself.
    pub pointer: String,
    /// What is wrong, in one phrase.
    pub message: String,
}

impl Compiled {
    /// Compiles a schema.
    ///
    /// # Errors
    /// A message naming the first unsupported keyword or malformed value.
    pub fn compile(schema: &Value) -> Result<Compiled, String> {
        compile_at(schema, "")
    }

    /// Checks a value, returning the first violation found.
    pub fn validate(&self, v: &Value) -> Result<(), Violation> {
        self.check(v, &Place::Root)
    }

    fn check(&self, v: &Value, at: &Place<'_>) -> Result<(), Violation> {
        let fail = |at: &Place<'_>, message: String| Err(Violation { pointer: at.pointer(), message });
        if !self.types.is_empty() && !self.types.iter().any(|t| t.matches(v)) {
            let want: Vec<&str> = self.types.iter().map(|t| t.name()).collect();
            return fail(at, format!("expected {}, got {}", want.join(" or "), type_of(v)));
        }
        if let Some(allowed) = &self.enumeration
            && !allowed.contains(v)
        {
            return fail(at, format!("must be one of {}", Value::Array(allowed.clone())));
        }
        match v {
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if let Some(min) = self.minimum
                    && x < min
                {
                    return fail(at, format!("must be at least {min}"));
                }
                if let Some(max) = self.maximum
                    && x > max
                {
                    return fail(at, format!("must be at most {max}"));
                }
            }
            Value::String(s) => {
                if self.min_length.is_some() || self.max_length.is_some() {
                    let n = s.chars().count();
                    if self.min_length.is_some_and(|m| n < m) {
                        return fail(at, format!("must have at least {} characters", self.min_length.unwrap_or(0)));
                    }
                    if let Some(m) = self.max_length
                        && n > m
                    {
                        return fail(at, format!("must have at most {m} characters"));
                    }
                }
                if let Some(re) = &self.pattern
                    && !re.is_match(s)
                {
                    return fail(at, format!("must match /{}/", re.as_str()));
                }
            }
            Value::Array(items) => {
                if let Some(m) = self.min_items
                    && items.len() < m
                {
                    return fail(at, format!("must have at least {m} items"));
                }
                if let Some(m) = self.max_items
                    && items.len() > m
                {
                    return fail(at, format!("must have at most {m} items"));
                }
                if let Some(item) = &self.items {
                    for (i, x) in items.iter().enumerate() {
                        item.check(x, &Place::Item(at, i))?;
                    }
                }
            }
            Value::Object(map) => self.check_object(map, at)?,
            _ => {}
        }
        Ok(())
    }

    fn check_object(&self, map: &Map<String, Value>, at: &Place<'_>) -> Result<(), Violation> {
        for name in &self.required {
            if !map.contains_key(name) {
                return Err(Violation { pointer: Place::Field(at, name).pointer(), message: "is required".into() });
            }
        }
        for (k, x) in map {
            let here = Place::Field(at, k);
            match (self.properties.get(k), &self.extra) {
                (Some(s), _) => s.check(x, &here)?,
                (None, Extra::Schema(s)) => s.check(x, &here)?,
                (None, Extra::Allow) => {}
                (None, Extra::Deny) => {
                    return Err(Violation { pointer: here.pointer(), message: "is not a known field".into() });
                }
            }
        }
        Ok(())
    }
}

/// Where in the value a check is: a chain on the stack, spelled as a JSON pointer only for a
/// violation, so a value that passes costs no string.
enum Place<'a> {
    Root,
    Field(&'a Place<'a>, &'a str),
    Item(&'a Place<'a>, usize),
}

impl Place<'_> {
    /// The JSON pointer of this place (`""` for the root).
    fn pointer(&self) -> String {
        let mut out = String::new();
        self.push(&mut out);
        out
    }

    fn push(&self, out: &mut String) {
        match self {
            Place::Root => {}
            Place::Field(parent, key) => {
                parent.push(out);
                out.push('/');
                push_escaped(out, key);
            }
            Place::Item(parent, i) => {
                parent.push(out);
                // Writing to a String cannot fail.
                let _ = write!(out, "/{i}");
            }
        }
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Appends `key` escaped as a JSON pointer token; allocates nothing for a plain key.
fn push_escaped(at: &mut String, key: &str) {
    if key.contains(['~', '/']) {
        at.push_str(&escape(key));
    } else {
        at.push_str(key);
    }
}

fn compile_at(schema: &Value, at: &str) -> Result<Compiled, String> {
    let obj = schema.as_object().ok_or_else(|| format!("{at}: a schema must be an object"))?;
    let mut c = Compiled {
        types: vec![],
        properties: BTreeMap::new(),
        required: vec![],
        extra: Extra::Allow,
        items: None,
        enumeration: None,
        minimum: None,
        maximum: None,
        min_length: None,
        max_length: None,
        pattern: None,
        min_items: None,
        max_items: None,
    };
    let usize_of = |v: &Value, k: &str| {
        v.as_u64().map(|n| n as usize).ok_or_else(|| format!("{at}/{k}: expected a non-negative integer"))
    };
    for (k, v) in obj {
        match k.as_str() {
            "type" => {
                let names: Vec<&Value> = match v {
                    Value::Array(a) => a.iter().collect(),
                    other => vec![other],
                };
                for n in names {
                    let ty = n.as_str().and_then(Ty::parse).ok_or_else(|| format!("{at}/type: unknown type {n}"))?;
                    c.types.push(ty);
                }
            }
            "properties" => {
                let props = v.as_object().ok_or_else(|| format!("{at}/properties: expected an object"))?;
                for (name, s) in props {
                    c.properties.insert(name.clone(), compile_at(s, &format!("{at}/properties/{name}"))?);
                }
            }
            "required" => {
                let names = v.as_array().ok_or_else(|| format!("{at}/required: expected an array"))?;
                for n in names {
                    c.required.push(n.as_str().ok_or_else(|| format!("{at}/required: expected strings"))?.to_owned());
                }
            }
            "additionalProperties" => {
                c.extra = match v {
                    Value::Bool(true) => Extra::Allow,
                    Value::Bool(false) => Extra::Deny,
                    s => Extra::Schema(Box::new(compile_at(s, &format!("{at}/additionalProperties"))?)),
                }
            }
            "items" => c.items = Some(Box::new(compile_at(v, &format!("{at}/items"))?)),
            "enum" => {
                c.enumeration = Some(v.as_array().ok_or_else(|| format!("{at}/enum: expected an array"))?.clone())
            }
            "const" => c.enumeration = Some(vec![v.clone()]),
            "minimum" => c.minimum = Some(v.as_f64().ok_or_else(|| format!("{at}/minimum: expected a number"))?),
            "maximum" => c.maximum = Some(v.as_f64().ok_or_else(|| format!("{at}/maximum: expected a number"))?),
            "minLength" => c.min_length = Some(usize_of(v, k)?),
            "maxLength" => c.max_length = Some(usize_of(v, k)?),
            "minItems" => c.min_items = Some(usize_of(v, k)?),
            "maxItems" => c.max_items = Some(usize_of(v, k)?),
            "pattern" => {
                let p = v.as_str().ok_or_else(|| format!("{at}/pattern: expected a string"))?;
                c.pattern = Some(pattern(p).map_err(|e| format!("{at}/pattern: {e}"))?);
            }
            "description" | "default" | "format" | "title" | "examples" | "$schema" => {}
            other => return Err(format!("{at}: unsupported keyword `{other}`")),
        }
    }
    for name in &c.required {
        if matches!(c.extra, Extra::Deny) && !c.properties.contains_key(name) {
            return Err(format!("{at}/required: `{name}` is required but not a property"));
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Compiled {
        let s = json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "minLength": 1},
                "limit": {"type": "integer", "minimum": 1, "maximum": 10},
                "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
            },
            "required": ["path"],
            "additionalProperties": false,
        });
        Compiled::compile(&s).expect("valid schema")
    }

    /// Proves a pattern compiled from the cache checks like a fresh one (two schemas sharing
    /// a pattern both enforce it) and an invalid pattern is still refused at compile time.
    #[test]
    fn shared_patterns_check_and_bad_ones_are_refused() {
        let s = json!({"type": "string", "pattern": "^[^-]"});
        let (a, b) = (Compiled::compile(&s).expect("valid"), Compiled::compile(&s).expect("valid"));
        for c in [&a, &b] {
            assert!(c.validate(&json!("ok")).is_ok());
            assert_eq!(c.validate(&json!("-x")).expect_err("leading dash").pointer, "");
        }
        for _ in 0..2 {
            let Err(e) = Compiled::compile(&json!({"type": "string", "pattern": "(unclosed"})) else {
                panic!("an unclosed group compiled");
            };
            assert!(e.contains("/pattern"), "{e}");
        }
    }

    /// Proves a valid value passes and each kind of violation names its JSON pointer.
    #[test]
    fn violations_name_the_offending_field() {
        let s = schema();
        assert!(s.validate(&json!({"path": "x", "limit": 3, "tags": ["a"]})).is_ok());
        let cases = [
            (json!({}), "/path", "is required"),
            (json!({"path": 1}), "/path", "expected string, got integer"),
            (json!({"path": ""}), "/path", "must have at least 1 characters"),
            (json!({"path": "x", "limit": 11}), "/limit", "must be at most 10"),
            (json!({"path": "x", "limit": 1.5}), "/limit", "expected integer, got number"),
            (json!({"path": "x", "tags": ["c"]}), "/tags/0", "must be one of [\"a\",\"b\"]"),
            (json!({"path": "x", "extra": true}), "/extra", "is not a known field"),
            (json!({"path": "x", "a/b~c": true}), "/a~1b~0c", "is not a known field"),
            (json!([]), "", "expected object, got array"),
        ];
        for (value, pointer, message) in cases {
            let v = s.validate(&value).expect_err("must fail");
            assert_eq!((v.pointer.as_str(), v.message.as_str()), (pointer, message), "{value}");
        }
    }

    /// Proves an unsupported keyword is refused at compile time rather than silently ignored.
    #[test]
    fn unsupported_keywords_are_refused() {
        let err = Compiled::compile(&json!({"type": "string", "oneOf": []})).expect_err("must fail");
        assert!(err.contains("oneOf"), "{err}");
    }

    /// Proves an integral number written as a float (`4.0`, `40E5`) is no integer, as the tools'
    /// integer fields refuse it (fuzz/regressions/tool_args: the contract let it through to Input).
    #[test]
    fn integral_floats_are_not_integers() {
        let s = schema();
        let v: Value = serde_json::from_str(r#"{"path": "x", "limit": 40E5}"#).expect("JSON");
        let e = s.validate(&v).expect_err("a float is no integer");
        assert_eq!((e.pointer.as_str(), e.message.as_str()), ("/limit", "expected integer, got number"));
        assert!(s.validate(&json!({"path": "x", "limit": 4.0})).is_err());
        assert!(s.validate(&json!({"path": "x", "limit": 4})).is_ok());
    }
}
