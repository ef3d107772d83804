//! A validator for requests and responses against Gitea's Swagger 2.0 subset
//! (`shared/data/gitea/openapi-v1.26.3-subset.json`).
//!
//! It answers two questions for the Gitea conformance tests: does a request the client sent
//! match an operation of the spec, and does a response the test server sent match what that
//! operation declares. Both the client and the test server are checked against the same file,
//! so neither can drift from Gitea's published API.
//!
//! # Rules
//!
//! **Requests.**
//! - The path must start with `basePath` (`/api/v1`); the rest is matched against the path
//!   templates, `{name}` standing for one non-empty segment. When several templates match,
//!   the one with most literal segments wins. The method must be one the template declares.
//! - Path parameters are checked against their declared `type` (and `enum`, `minimum`).
//! - Every query key must be a declared `in: query` parameter of the operation; a key may
//!   repeat only for `type: array` with `collectionFormat: multi`; each value must parse as its
//!   declared type (`integer`, `number`, `boolean`, `string`, `array` with `csv` or `multi`) and
//!   satisfy `enum`, `minimum` and `maximum`; `required` query parameters must be present.
//!   The deprecated query-string credentials of `securityDefinitions` (`token`,
//!   `access_token`, `sudo`) are refused even though the spec lists them: a token in a URL ends
//!   up in logs.
//! - Authentication must use the `AuthorizationHeaderToken` scheme: an `Authorization` header
//!   of the form `token <T>` (recorded requests carry it as `token [redacted]`).
//! - A JSON body is allowed only when the operation has an `in: body` parameter; its
//!   `Content-Type` must be one the operation `consumes`, and it must validate against the
//!   parameter's schema. A `required` body must be present.
//!
//! **Responses.**
//! - The status must be declared for the operation (or a `default` be declared). The one
//!   exception is **401**, accepted for every operation because the spec's top-level
//!   `security` applies to all of them and Swagger 2.0 has no place to declare the answer to
//!   failed authentication; its body must be Gitea's error object (below).
//! - A response declaring a `schema` must carry a JSON body (`Content-Type` one the operation
//!   `produces`) that validates against it.
//! - A response without a schema must have an empty body when it is a 2xx (`204 empty`);
//!   otherwise it is empty or **Gitea's error object**: a JSON object whose members are
//!   `message` (string) and `url` (string) and nothing else. Gitea's go-swagger annotations
//!   declare those two fields under `headers` of the `error`, `forbidden`, `validationError`
//!   and `repoArchivedError` responses, while the server sends them in the body; so a declared
//!   header is satisfied by an HTTP header of that name **or** by a body member of that name.
//!   Headers declared on responses with a schema must be present as HTTP headers.
//!
//! **Schemas** (Swagger 2.0 subset): `$ref` (any local JSON pointer, normally
//! `#/definitions/X`), `type` (`object`, `array`, `string`, `integer`, `number`, `boolean`; an
//! absent type accepts anything), `properties`, `required`, `additionalProperties` (boolean
//! or schema), `items`, `enum`, `minimum`, `maximum`. `format`, `description`, `example`,
//! `default`, `x-*` and `title` are annotations and are ignored.
//! - **Null.** Gitea's spec omits `x-nullable` where the server sends `null` (`"assignees":
//!   null`, `"milestone": null`, `"closed_at": null`). JSON `null` is therefore accepted for a
//!   property its object does not list in `required`, and for any schema marked
//!   `x-nullable: true`; nowhere else (not for array items, not at the root).
//! - **Undeclared properties.** Swagger's default is to allow them, but Gitea's spec is
//!   generated from the very Go structs the server serialises, so a member the spec does not
//!   declare means drift. With [`Strictness::Closed`] (the default) an object refuses members
//!   not in `properties` unless `additionalProperties` allows them, except the members listed
//!   in [`COMPAT_MEMBERS`]. [`Strictness::Open`] follows Swagger's default.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value};

/// Where the spec subset lives: `shared/` sits beside the repository root `main/`.
pub fn spec_path() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/gitea/openapi-v1.26.3-subset.json"))
}

/// Members real Gitea sends that its spec does not declare, accepted in [`Strictness::Closed`]:
/// `(definition, member, why)`.
pub const COMPAT_MEMBERS: &[(&str, &str, &str)] =
    &[("User", "username", "Gitea's User.MarshalJSON adds `username` (a copy of `login`) for backward compatibility")];

/// Query parameters refused whatever the spec says (see the module docs).
pub const SECRET_QUERY_PARAMS: &[&str] = &["token", "access_token", "sudo"];

/// How objects treat members their schema does not declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strictness {
    /// Refuse them unless `additionalProperties` or [`COMPAT_MEMBERS`] allows them.
    #[default]
    Closed,
    /// Allow them, as Swagger 2.0 does by default.
    Open,
}

/// One HTTP request as the test server received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpRequest {
    /// Upper-case method.
    pub method: String,
    /// The path as sent (percent-encoded), without the query.
    pub path: String,
    /// The query string as sent, when there was one.
    pub raw_query: Option<String>,
    /// Decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    /// Lower-case header names with values; `authorization` is redacted to its scheme.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
}

/// One HTTP response as the test server sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Lower-case header names with values.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
}

/// A request and the response it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exchange {
    /// What came in.
    pub request: HttpRequest,
    /// What went out.
    pub response: HttpResponse,
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

impl HttpRequest {
    /// The first header of that name.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The body as JSON, when it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

impl HttpResponse {
    /// The first header of that name.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The body as JSON, when it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Param(String),
}

/// One operation of the spec: a method on a path template.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Upper-case method.
    pub method: String,
    /// The path template, e.g. `/repos/{owner}/{repo}/issues/{index}`.
    pub template: String,
    /// `operationId`.
    pub id: String,
    segments: Vec<Segment>,
    /// Parameters (path-level and operation-level, `$ref`s resolved).
    params: Vec<Value>,
    responses: Map<String, Value>,
    consumes: Vec<String>,
    produces: Vec<String>,
}

impl Operation {
    fn literal_count(&self) -> usize {
        self.segments.iter().filter(|s| matches!(s, Segment::Literal(_))).count()
    }

    fn params_in<'a>(&'a self, place: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.params.iter().filter(move |p| p["in"] == place)
    }

    /// Whether the operation declares this status code.
    pub fn declares(&self, status: u16) -> bool {
        self.responses.contains_key(&status.to_string())
    }
}

/// The loaded spec.
#[derive(Debug, Clone)]
pub struct Spec {
    doc: Value,
    base_path: String,
    ops: Vec<Operation>,
    secured: bool,
    /// How objects treat undeclared members.
    pub strictness: Strictness,
}

impl Spec {
    /// Loads the subset from [`spec_path`].
    ///
    /// # Errors
    /// When the file is missing or not a Swagger 2.0 document.
    pub fn load() -> Result<Spec, String> {
        let path = spec_path();
        let text = std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let doc: Value = serde_json::from_str(&text).map_err(|e| format!("parse {}: {e}", path.display()))?;
        Spec::from_value(doc)
    }

    /// Builds a validator from a Swagger 2.0 document.
    ///
    /// # Errors
    /// When it is not Swagger 2.0 or an operation is malformed.
    pub fn from_value(doc: Value) -> Result<Spec, String> {
        if doc["swagger"] != "2.0" {
            return Err("not a Swagger 2.0 document".into());
        }
        let base_path = doc["basePath"].as_str().unwrap_or("").trim_end_matches('/').to_owned();
        let global_consumes = strings(&doc["consumes"]);
        let global_produces = strings(&doc["produces"]);
        let secured = doc["security"].as_array().is_some_and(|a| !a.is_empty());
        let mut ops = Vec::new();
        let paths = doc["paths"].as_object().ok_or("no paths")?;
        for (template, item) in paths {
            let item = item.as_object().ok_or_else(|| format!("{template}: not an object"))?;
            let shared: Vec<Value> = item.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
            for (method, op) in item {
                if !matches!(method.as_str(), "get" | "put" | "post" | "delete" | "options" | "head" | "patch") {
                    continue;
                }
                let mut params: Vec<Value> = Vec::new();
                let own: Vec<Value> = op["parameters"].as_array().cloned().unwrap_or_default();
                for p in shared.iter().chain(own.iter()) {
                    let p = resolve_ref(&doc, p)?.clone();
                    // An operation-level parameter overrides a path-level one of the same name and place.
                    params.retain(|q: &Value| !(q["name"] == p["name"] && q["in"] == p["in"]));
                    params.push(p);
                }
                let segments = template
                    .trim_start_matches('/')
                    .split('/')
                    .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        Some(name) => Segment::Param(name.to_owned()),
                        None => Segment::Literal(s.to_owned()),
                    })
                    .collect();
                let consumes = op.get("consumes").map(strings).unwrap_or_else(|| global_consumes.clone());
                let produces = op.get("produces").map(strings).unwrap_or_else(|| global_produces.clone());
                ops.push(Operation {
                    method: method.to_uppercase(),
                    template: template.clone(),
                    id: op["operationId"].as_str().unwrap_or("").to_owned(),
                    segments,
                    params,
                    responses: op["responses"]
                        .as_object()
                        .cloned()
                        .ok_or_else(|| format!("{method} {template}: no responses"))?,
                    consumes,
                    produces,
                });
            }
        }
        Ok(Spec { doc, base_path, ops, secured, strictness: Strictness::Closed })
    }

    /// The same spec with another [`Strictness`].
    #[must_use]
    pub fn with_strictness(mut self, strictness: Strictness) -> Spec {
        self.strictness = strictness;
        self
    }

    /// Every operation.
    pub fn operations(&self) -> &[Operation] {
        &self.ops
    }

    /// The operation with this `operationId`.
    pub fn operation(&self, id: &str) -> Option<&Operation> {
        self.ops.iter().find(|o| o.id == id)
    }

    /// The operation a method and concrete path (with `basePath`, without query) call, with the
    /// decoded path parameters.
    ///
    /// # Errors
    /// When no operation matches, naming why.
    pub fn find(&self, method: &str, path: &str) -> Result<(&Operation, BTreeMap<String, String>), String> {
        let rest = path
            .strip_prefix(&self.base_path)
            .filter(|r| r.starts_with('/'))
            .ok_or_else(|| format!("{path} is not under basePath {}", self.base_path))?;
        let concrete: Vec<String> = rest.trim_start_matches('/').split('/').map(decode_segment).collect();
        let mut best: Option<(&Operation, BTreeMap<String, String>)> = None;
        let mut methods_for_path: Vec<&str> = Vec::new();
        for op in &self.ops {
            let Some(params) = match_template(&op.segments, &concrete) else { continue };
            if !op.method.eq_ignore_ascii_case(method) {
                methods_for_path.push(&op.method);
                continue;
            }
            if best.as_ref().is_none_or(|(b, _)| op.literal_count() > b.literal_count()) {
                best = Some((op, params));
            }
        }
        best.ok_or_else(|| {
            if methods_for_path.is_empty() {
                format!("no operation's path template matches {path}")
            } else {
                format!("{method} is not declared for {path} (declared: {})", methods_for_path.join(", "))
            }
        })
    }

    /// Checks a request; returns the operation it calls.
    ///
    /// # Errors
    /// Every violation found.
    pub fn check_request(&self, req: &HttpRequest) -> Result<&Operation, Vec<String>> {
        let (op, path_params) = self.find(&req.method, &req.path).map_err(|e| vec![e])?;
        let mut errs = Vec::new();
        let name = format!("{} {}", op.method, op.template);
        for p in op.params_in("path") {
            let pname = p["name"].as_str().unwrap_or("");
            match path_params.get(pname) {
                Some(v) => check_param_value(p, v, &format!("{name}: path parameter `{pname}`"), &mut errs),
                None => errs.push(format!("{name}: path parameter `{pname}` missing")),
            }
        }
        // Query.
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (k, _) in &req.query {
            *counts.entry(k.as_str()).or_default() += 1;
        }
        for (k, n) in &counts {
            if SECRET_QUERY_PARAMS.contains(k) {
                errs.push(format!("{name}: credentials in the query string (`{k}`) are refused"));
                continue;
            }
            let Some(p) = op.params_in("query").find(|p| p["name"] == *k) else {
                errs.push(format!("{name}: query parameter `{k}` is not declared"));
                continue;
            };
            let multi = p["type"] == "array" && p["collectionFormat"] == "multi";
            if *n > 1 && !multi {
                errs.push(format!(
                    "{name}: query parameter `{k}` repeated {n} times but not an array with collectionFormat multi"
                ));
            }
            for (_, v) in req.query.iter().filter(|(q, _)| q == k) {
                check_param_value(p, v, &format!("{name}: query parameter `{k}`"), &mut errs);
            }
        }
        for p in op.params_in("query") {
            let pname = p["name"].as_str().unwrap_or("");
            if p["required"] == true && !counts.contains_key(pname) {
                errs.push(format!("{name}: required query parameter `{pname}` missing"));
            }
        }
        // Authentication.
        match req.header("authorization") {
            Some(v) if v.len() > 6 && v[..6].eq_ignore_ascii_case("token ") => {}
            Some(_) => errs.push(format!("{name}: Authorization header is not `token <T>` (AuthorizationHeaderToken)")),
            None => errs.push(format!("{name}: no Authorization header")),
        }
        // Body.
        let body_param = op.params_in("body").next();
        match (body_param, req.body.is_empty()) {
            (None, true) => {}
            (None, false) => errs.push(format!("{name}: sends a body but the operation declares none")),
            (Some(p), true) => {
                if p["required"] == true {
                    errs.push(format!("{name}: required body missing"));
                }
            }
            (Some(p), false) => {
                let ct = req.header("content-type").unwrap_or("");
                if !op.consumes.iter().any(|c| media_type(ct) == c.as_str()) {
                    errs.push(format!("{name}: Content-Type `{ct}` not in consumes {:?}", op.consumes));
                }
                match serde_json::from_slice::<Value>(&req.body) {
                    Ok(v) => {
                        for e in self.check_schema(&p["schema"], &v) {
                            errs.push(format!("{name}: request body {e}"));
                        }
                    }
                    Err(e) => errs.push(format!("{name}: request body is not JSON: {e}")),
                }
            }
        }
        if errs.is_empty() { Ok(op) } else { Err(errs) }
    }

    /// Checks a response to an operation.
    ///
    /// # Errors
    /// Every violation found.
    pub fn check_response(&self, op: &Operation, resp: &HttpResponse) -> Result<(), Vec<String>> {
        let name = format!("{} {} -> {}", op.method, op.template, resp.status);
        let declared = op.responses.get(&resp.status.to_string()).or_else(|| op.responses.get("default"));
        let declared = match declared {
            Some(d) => resolve_ref(&self.doc, d).map_err(|e| vec![e])?.clone(),
            None if resp.status == 401 && self.secured => {
                let e = self.doc.pointer("/responses/error").cloned().unwrap_or(Value::Null);
                if e.is_null() {
                    return Err(vec![format!("{name}: the spec has no `error` response to check a 401 against")]);
                }
                e
            }
            None => {
                let known: Vec<&String> = op.responses.keys().collect();
                return Err(vec![format!("{name}: status {} is not declared (declared: {known:?})", resp.status)]);
            }
        };
        let mut errs = Vec::new();
        let ct = resp.header("content-type").unwrap_or("");
        let body_members: Option<Map<String, Value>>;
        if let Some(schema) = declared.get("schema") {
            body_members = None;
            if !op.produces.iter().any(|p| media_type(ct) == p.as_str()) {
                errs.push(format!("{name}: Content-Type `{ct}` not in produces {:?}", op.produces));
            }
            match serde_json::from_slice::<Value>(&resp.body) {
                Ok(v) => errs.extend(self.check_schema(schema, &v).into_iter().map(|e| format!("{name}: body {e}"))),
                Err(e) => errs.push(format!("{name}: body is not JSON: {e}")),
            }
        } else if resp.body.is_empty() {
            body_members = Some(Map::new());
        } else if (200..300).contains(&resp.status) {
            body_members = None;
            errs.push(format!("{name}: declares no body, but one was sent"));
        } else {
            // Gitea's error object; see the module docs.
            let declared_headers: Vec<String> =
                declared["headers"].as_object().map(|h| h.keys().cloned().collect()).unwrap_or_default();
            if media_type(ct) != "application/json" {
                errs.push(format!("{name}: error body Content-Type `{ct}` is not application/json"));
            }
            match serde_json::from_slice::<Value>(&resp.body) {
                Ok(Value::Object(m)) => {
                    for field in ["message", "url"] {
                        match m.get(field) {
                            Some(Value::String(_)) => {}
                            Some(other) => errs.push(format!("{name}: error `{field}` must be a string, got {other}")),
                            None => errs.push(format!("{name}: error body lacks `{field}`")),
                        }
                    }
                    for k in m.keys() {
                        if k != "message" && k != "url" && !declared_headers.contains(k) {
                            errs.push(format!("{name}: error body has undeclared member `{k}`"));
                        }
                    }
                    body_members = Some(m);
                }
                Ok(other) => {
                    errs.push(format!("{name}: error body must be a JSON object, got {other}"));
                    body_members = None;
                }
                Err(e) => {
                    errs.push(format!("{name}: error body is not JSON: {e}"));
                    body_members = None;
                }
            }
        }
        if let Some(headers) = declared["headers"].as_object() {
            for h in headers.keys() {
                let in_headers = resp.header(h).is_some();
                let in_body = body_members.as_ref().is_some_and(|m| m.contains_key(h));
                if !in_headers && !in_body {
                    errs.push(format!("{name}: declared header `{h}` is missing"));
                }
            }
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// Checks a whole exchange: the request, then the response against its operation.
    ///
    /// # Errors
    /// Every violation found.
    pub fn check_exchange(&self, ex: &Exchange) -> Result<&Operation, Vec<String>> {
        let op = self.check_request(&ex.request)?;
        self.check_response(op, &ex.response)?;
        Ok(op)
    }

    /// Checks a value against the named definition (`#/definitions/<name>`).
    pub fn check_definition(&self, name: &str, value: &Value) -> Vec<String> {
        self.check_schema(&serde_json::json!({ "$ref": format!("#/definitions/{name}") }), value)
    }

    /// Checks a value against a schema of this document; each violation names its JSON pointer.
    pub fn check_schema(&self, schema: &Value, value: &Value) -> Vec<String> {
        let mut errs = Vec::new();
        self.walk(schema, value, "", None, &mut errs, 0);
        errs
    }

    fn walk(&self, schema: &Value, v: &Value, at: &str, def: Option<&str>, errs: &mut Vec<String>, depth: usize) {
        if depth > 64 {
            errs.push(format!("{at}: schema nesting too deep"));
            return;
        }
        let mut def = def;
        let schema = match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                def = r.strip_prefix("#/definitions/");
                match self.doc.pointer(r.trim_start_matches('#')) {
                    Some(s) => s,
                    None => {
                        errs.push(format!("{at}: unresolved $ref {r}"));
                        return;
                    }
                }
            }
            None => schema,
        };
        let shown = if at.is_empty() { "/" } else { at };
        if v.is_null() {
            if schema["x-nullable"] != true {
                errs.push(format!("{shown}: null is not allowed here"));
            }
            return;
        }
        if let Some(t) = schema["type"].as_str() {
            let ok = match t {
                "object" => v.is_object(),
                "array" => v.is_array(),
                "string" => v.is_string(),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                "boolean" => v.is_boolean(),
                "file" => true,
                _ => {
                    errs.push(format!("{shown}: unknown schema type `{t}`"));
                    return;
                }
            };
            if !ok {
                errs.push(format!("{shown}: expected {t}, got {}", type_name(v)));
                return;
            }
        }
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(v)
        {
            errs.push(format!("{shown}: {v} is not one of {}", Value::Array(allowed.clone())));
        }
        if let Some(x) = v.as_f64() {
            if schema["minimum"].as_f64().is_some_and(|m| x < m) {
                errs.push(format!("{shown}: {x} is below the minimum {}", schema["minimum"]));
            }
            if schema["maximum"].as_f64().is_some_and(|m| x > m) {
                errs.push(format!("{shown}: {x} is above the maximum {}", schema["maximum"]));
            }
        }
        match v {
            Value::Array(items) => {
                if let Some(item) = schema.get("items") {
                    for (i, x) in items.iter().enumerate() {
                        if x.is_null() && item.get("x-nullable") != Some(&Value::Bool(true)) {
                            errs.push(format!("{at}/{i}: null is not allowed as an array item"));
                            continue;
                        }
                        self.walk(item, x, &format!("{at}/{i}"), None, errs, depth + 1);
                    }
                }
            }
            Value::Object(m) => self.walk_object(schema, m, at, def, errs, depth),
            _ => {}
        }
    }

    fn walk_object(
        &self,
        schema: &Value,
        m: &Map<String, Value>,
        at: &str,
        def: Option<&str>,
        errs: &mut Vec<String>,
        depth: usize,
    ) {
        let props = schema["properties"].as_object();
        let required: Vec<&str> =
            schema["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        for r in &required {
            if !m.contains_key(*r) {
                errs.push(format!("{at}/{r}: required property missing"));
            }
        }
        let declared_any = props.is_some() || schema.get("additionalProperties").is_some();
        for (k, x) in m {
            let here = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
            if let Some(p) = props.and_then(|p| p.get(k)) {
                if x.is_null() && !required.contains(&k.as_str()) {
                    continue; // the null rule: see the module docs
                }
                self.walk(p, x, &here, None, errs, depth + 1);
                continue;
            }
            match schema.get("additionalProperties") {
                Some(Value::Bool(true)) => {}
                Some(Value::Bool(false)) => {
                    errs.push(format!("{here}: undeclared property (additionalProperties: false)"))
                }
                Some(extra @ Value::Object(_)) => self.walk(extra, x, &here, None, errs, depth + 1),
                _ => {
                    let compat = def.is_some_and(|d| COMPAT_MEMBERS.iter().any(|(cd, cm, _)| *cd == d && cm == k));
                    // A schema with neither `properties` nor `additionalProperties` is a free-form object.
                    if self.strictness == Strictness::Closed && declared_any && !compat {
                        errs.push(format!(
                            "{here}: undeclared property{}",
                            def.map(|d| format!(" of {d}")).unwrap_or_default()
                        ));
                    }
                }
            }
        }
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect()).unwrap_or_default()
}

fn media_type(ct: &str) -> &str {
    ct.split(';').next().unwrap_or("").trim()
}

fn type_name(v: &Value) -> &'static str {
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

fn resolve_ref<'a>(doc: &'a Value, v: &'a Value) -> Result<&'a Value, String> {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => doc.pointer(r.trim_start_matches('#')).ok_or_else(|| format!("unresolved $ref {r}")),
        None => Ok(v),
    }
}

fn decode_segment(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn match_template(template: &[Segment], concrete: &[String]) -> Option<BTreeMap<String, String>> {
    if template.len() != concrete.len() {
        return None;
    }
    let mut params = BTreeMap::new();
    for (t, c) in template.iter().zip(concrete) {
        match t {
            Segment::Literal(l) if l == c => {}
            Segment::Literal(_) => return None,
            Segment::Param(_) if c.is_empty() => return None,
            Segment::Param(name) => {
                params.insert(name.clone(), c.clone());
            }
        }
    }
    Some(params)
}

/// Checks one path or query value against its parameter declaration.
fn check_param_value(p: &Value, raw: &str, what: &str, errs: &mut Vec<String>) {
    let ty = p["type"].as_str().unwrap_or("string");
    if ty == "array" {
        let items = &p["items"];
        let parts: Vec<&str> = match p["collectionFormat"].as_str().unwrap_or("csv") {
            "multi" => vec![raw],
            "ssv" => raw.split(' ').collect(),
            "tsv" => raw.split('\t').collect(),
            "pipes" => raw.split('|').collect(),
            _ => raw.split(',').collect(),
        };
        for part in parts {
            check_scalar(items, part, what, errs);
        }
        return;
    }
    check_scalar(p, raw, what, errs);
}

fn check_scalar(p: &Value, raw: &str, what: &str, errs: &mut Vec<String>) {
    let value = match p["type"].as_str().unwrap_or("string") {
        "integer" => match raw.parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) => return errs.push(format!("{what}: `{raw}` is not an integer")),
        },
        "number" => match raw.parse::<f64>() {
            Ok(n) => Value::from(n),
            Err(_) => return errs.push(format!("{what}: `{raw}` is not a number")),
        },
        "boolean" => match raw {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return errs.push(format!("{what}: `{raw}` is not a boolean")),
        },
        _ => Value::String(raw.to_owned()),
    };
    if let Some(allowed) = p["enum"].as_array()
        && !allowed.contains(&value)
    {
        errs.push(format!("{what}: `{raw}` is not one of {}", Value::Array(allowed.clone())));
    }
    if let Some(x) = value.as_f64() {
        if p["minimum"].as_f64().is_some_and(|m| x < m) {
            errs.push(format!("{what}: {x} is below the minimum {}", p["minimum"]));
        }
        if p["maximum"].as_f64().is_some_and(|m| x > m) {
            errs.push(format!("{what}: {x} is above the maximum {}", p["maximum"]));
        }
    }
}
