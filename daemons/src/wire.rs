//! Conversions between the library's types and the `uniwizard.v1` wire types, in one place.
//!
//! Errors cross the wire two ways: as an `ErrorDetail` inside a response (a tool call that was
//! refused or failed: the RPC itself worked), or as a gRPC `Status` (the RPC could not be
//! served: auth, bad request, not the leader). A `Status` made here carries the encoded
//! `ErrorDetail` in its details and the code in its message, so either way the caller gets the
//! stable E-code.
//!
//! Every error leaves bounded ([`Bounds`]): a message or detail that echoes a caller's input
//! (a tool name, a task id) is cut, so no caller can make an error larger than the RPC's
//! limits. A status rides in HTTP/2 trailers, which peers cap at 8 to 16 KiB; a tool name of
//! 10,000 characters echoed whole made the client see RESOURCE_EXHAUSTED instead of E1001.

use prost::Message;
use serde_json::{Value, json};
use uni_wizard::{Error, ErrorCategory, ErrorCode, House, Mode, Outcome, Request};
use uni_wizard_proto::v1;

/// The wire house; `Unspecified` never comes out of a library house.
pub fn house_to_wire(h: House) -> v1::House {
    match h {
        House::Timmy => v1::House::Timmy,
        House::Allegro => v1::House::Allegro,
        House::Ezra => v1::House::Ezra,
        House::Bezalel => v1::House::Bezalel,
    }
}

/// The library house, or `None` for `HOUSE_UNSPECIFIED` and unknown numbers.
pub fn house_from_wire(raw: i32) -> Option<House> {
    match v1::House::try_from(raw).ok()? {
        v1::House::Unspecified => None,
        v1::House::Timmy => Some(House::Timmy),
        v1::House::Allegro => Some(House::Allegro),
        v1::House::Ezra => Some(House::Ezra),
        v1::House::Bezalel => Some(House::Bezalel),
    }
}

/// The wire mode.
pub fn mode_to_wire(m: Mode) -> v1::Mode {
    match m {
        Mode::Simple => v1::Mode::Simple,
        Mode::Intelligent => v1::Mode::Intelligent,
        Mode::Sovereign => v1::Mode::Sovereign,
    }
}

/// A house field of a request: `None` for `HOUSE_UNSPECIFIED`.
///
/// # Errors
/// E1002 naming `field` for a number that is no house (an unknown enum value is not "none").
pub fn house_field(raw: i32, field: &str) -> Result<Option<House>, Error> {
    match v1::House::try_from(raw) {
        Ok(_) => Ok(house_from_wire(raw)),
        Err(_) => Err(Error::new(ErrorCode::UnknownHouse, format!("`{field}` is {raw}, which is no house"))
            .with_details(json!({ "field": field, "value": raw }))),
    }
}

/// A house field a request must set.
///
/// # Errors
/// E1002 naming `field` when it is `HOUSE_UNSPECIFIED` or no house.
pub fn required_house(raw: i32, field: &str) -> Result<House, Error> {
    house_field(raw, field)?.ok_or_else(|| {
        Error::new(ErrorCode::UnknownHouse, format!("`{field}` is required"))
            .with_details(json!({ "field": field, "value": raw }))
    })
}

/// The library mode, or `None` for `MODE_UNSPECIFIED`.
///
/// # Errors
/// E1004 for a number that is no mode.
pub fn mode_from_wire(raw: i32) -> Result<Option<Mode>, Error> {
    match v1::Mode::try_from(raw) {
        Ok(v1::Mode::Unspecified) => Ok(None),
        Ok(v1::Mode::Simple) => Ok(Some(Mode::Simple)),
        Ok(v1::Mode::Intelligent) => Ok(Some(Mode::Intelligent)),
        Ok(v1::Mode::Sovereign) => Ok(Some(Mode::Sovereign)),
        Err(_) => Err(Error::new(ErrorCode::UnknownMode, format!("unknown mode number {raw}"))),
    }
}

/// How much of an error crosses the wire, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The message.
    pub message: usize,
    /// Each string inside the details.
    pub string: usize,
    /// The details as JSON; larger details are replaced by `{"truncated": <their size>}`.
    pub details: usize,
}

impl Bounds {
    /// An `ErrorDetail` inside a response body (a tool's failure, a task's result).
    pub const BODY: Bounds = Bounds { message: 1024, string: 4096, details: 16 * 1024 };
    /// A `Status`, whose message and encoded detail travel as HTTP/2 trailers: a few KiB in
    /// all, under the 8 KiB grpc-core accepts by default.
    pub const STATUS: Bounds = Bounds { message: 512, string: 256, details: 1024 };
}

/// `s` cut to at most `max` bytes on a character boundary, ending in `…` when cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let room = max.saturating_sub('…'.len_utf8());
    let end = (0..=room).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
    format!("{}…", &s[..end])
}

fn bound_strings(v: &mut Value, max: usize) {
    match v {
        Value::String(s) if s.len() > max => *s = cut(s, max),
        Value::Array(items) => items.iter_mut().for_each(|x| bound_strings(x, max)),
        Value::Object(fields) => fields.values_mut().for_each(|x| bound_strings(x, max)),
        _ => {}
    }
}

/// `e` within `b`: its message cut, every string of its details cut, and details still too
/// large replaced by their size. Bounding twice changes nothing.
pub fn bounded(e: &Error, b: Bounds) -> Error {
    let mut details = e.details.clone();
    bound_strings(&mut details, b.string);
    let size = details.to_string().len();
    if !details.is_null() && size > b.details {
        details = json!({ "truncated": size });
    }
    Error { message: cut(&e.message, b.message), details, ..e.clone() }
}

/// The wire error, within [`Bounds::BODY`].
pub fn error_to_wire(e: &Error) -> v1::ErrorDetail {
    detail(&bounded(e, Bounds::BODY))
}

fn detail(e: &Error) -> v1::ErrorDetail {
    let category = match e.code.category() {
        ErrorCategory::Contract => v1::ErrorCategory::Contract,
        ErrorCategory::Policy => v1::ErrorCategory::Policy,
        ErrorCategory::Execution => v1::ErrorCategory::Execution,
        ErrorCategory::Config => v1::ErrorCategory::Config,
        ErrorCategory::Auth => v1::ErrorCategory::Auth,
    };
    v1::ErrorDetail {
        code: e.code.as_str().to_owned(),
        category: category.into(),
        message: e.message.clone(),
        details_json: if e.details.is_null() { String::new() } else { e.details.to_string() },
        request_id: e.request_id.clone().unwrap_or_default(),
    }
}

/// The library error a wire error stands for. An unknown code (a newer peer) becomes E3003
/// with the original code kept in the details.
pub fn error_from_wire(d: &v1::ErrorDetail) -> Error {
    let details: Value = serde_json::from_str(&d.details_json).unwrap_or(Value::Null);
    let mut e = match ErrorCode::parse(&d.code) {
        Some(code) => Error::new(code, d.message.clone()).with_details(details),
        None => Error::new(ErrorCode::ToolFailed, format!("{}: {}", d.code, d.message))
            .with_details(json!({ "remote_code": d.code, "remote_details": details })),
    };
    if !d.request_id.is_empty() {
        e = e.with_request_id(d.request_id.clone());
    }
    e
}

/// A gRPC status for an error that stops the RPC itself, within [`Bounds::STATUS`].
pub fn status(e: &Error) -> tonic::Status {
    status_with(grpc_code(e.code), e)
}

/// As [`status`] with the gRPC code chosen by the caller (a request too large is
/// RESOURCE_EXHAUSTED, yet its E-code is a contract one).
pub fn status_with(code: tonic::Code, e: &Error) -> tonic::Status {
    let e = bounded(e, Bounds::STATUS);
    let detail = detail(&e);
    tonic::Status::with_details(code, format!("{}: {}", e.code, e.message), detail.encode_to_vec().into())
}

/// The gRPC code an error stops an RPC with.
fn grpc_code(c: ErrorCode) -> tonic::Code {
    use tonic::Code;
    match c {
        ErrorCode::Unauthenticated => Code::Unauthenticated,
        ErrorCode::Impersonation | ErrorCode::Forbidden => Code::PermissionDenied,
        ErrorCode::FencedOut => Code::FailedPrecondition,
        ErrorCode::Saturated => Code::ResourceExhausted,
        ErrorCode::NoHealthyHouse | ErrorCode::WorkerUnavailable => Code::Unavailable,
        ErrorCode::Timeout => Code::DeadlineExceeded,
        ErrorCode::NotFound => Code::NotFound,
        c => match c.category() {
            ErrorCategory::Contract => Code::InvalidArgument,
            ErrorCategory::Policy => Code::PermissionDenied,
            ErrorCategory::Execution => Code::Internal,
            ErrorCategory::Config => Code::FailedPrecondition,
            ErrorCategory::Auth => Code::Unauthenticated,
        },
    }
}

/// The library error inside a status: its `ErrorDetail` when one of ours made it, else E3012
/// (transport trouble) or E3003 naming the gRPC code.
pub fn error_from_status(s: &tonic::Status) -> Error {
    if let Ok(d) = v1::ErrorDetail::decode(s.details())
        && !d.code.is_empty()
    {
        return error_from_wire(&d);
    }
    let code = match s.code() {
        tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown => ErrorCode::WorkerUnavailable,
        tonic::Code::DeadlineExceeded => ErrorCode::Timeout,
        tonic::Code::Unauthenticated => ErrorCode::Unauthenticated,
        tonic::Code::PermissionDenied => ErrorCode::Forbidden,
        _ => ErrorCode::ToolFailed,
    };
    Error::new(code, format!("gRPC {:?}: {}", s.code(), s.message()))
        .with_details(json!({ "grpc_code": format!("{:?}", s.code()) }))
}

/// The wire outcome.
pub fn outcome_to_wire(o: &Outcome) -> v1::Outcome {
    v1::Outcome {
        request_id: o.request_id.clone(),
        provenance_id: o.provenance_id.clone(),
        tool: o.tool.clone(),
        house: house_to_wire(o.house).into(),
        mode: mode_to_wire(if o.degraded.is_some() { Mode::Simple } else { o.mode }).into(),
        output_json: o.output.to_string(),
        duration_us: o.duration_us,
        attempts: o.attempts,
        degraded_reason: o.degraded.clone(),
        warnings: o.warnings.clone(),
        dry_run: o.dry_run,
    }
}

/// A wire outcome as the JSON the CLI prints for a local one (same field names).
pub fn outcome_json(o: &v1::Outcome) -> Value {
    let house = house_from_wire(o.house).map_or("unspecified", House::as_str);
    let mode = mode_from_wire(o.mode).ok().flatten().map_or("unspecified", Mode::as_str);
    let mut v = json!({
        "request_id": o.request_id,
        "provenance_id": o.provenance_id,
        "tool": o.tool,
        "house": house,
        "mode": mode,
        "output": serde_json::from_str::<Value>(&o.output_json).unwrap_or(Value::String(o.output_json.clone())),
        "dry_run": o.dry_run,
        "attempts": o.attempts,
        "duration_us": o.duration_us,
    });
    if let Some(why) = &o.degraded_reason {
        v["degraded"] = json!(why);
    }
    if !o.warnings.is_empty() {
        v["warnings"] = json!(o.warnings);
    }
    v
}

/// A wire tool call as a library request.
///
/// # Errors
/// E1005 when the call is missing, names no tool or its `args_json` is not a JSON object.
pub fn request_from_wire(call: Option<&v1::ToolCall>) -> Result<Request, Error> {
    let call = call.ok_or_else(|| {
        Error::new(ErrorCode::InvalidInput, "the request carries no `call`").with_details(json!({ "field": "call" }))
    })?;
    if call.tool.trim().is_empty() {
        return Err(Error::new(ErrorCode::InvalidInput, "`call.tool` is required")
            .with_details(json!({ "field": "call.tool" })));
    }
    let args: Value = if call.args_json.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(&call.args_json).map_err(|e| {
            Error::new(ErrorCode::InvalidInput, format!("`args_json` is not JSON: {e}"))
                .with_details(json!({ "field": "call.args_json" }))
        })?
    };
    if !args.is_object() {
        return Err(Error::new(ErrorCode::InvalidInput, "`args_json` must be a JSON object")
            .with_details(json!({ "field": "call.args_json" })));
    }
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let mut req = Request::new(call.tool.clone(), args);
    req.session = opt(&call.session);
    req.proof = opt(&call.proof);
    req.idempotency_key = opt(&call.idempotency_key);
    req.dry_run = call.dry_run;
    req.timeout = (call.timeout_ms > 0).then(|| std::time::Duration::from_millis(u64::from(call.timeout_ms)));
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves an error survives the trip through a gRPC status with its code, message and details.
    #[test]
    fn errors_round_trip_through_a_status() {
        let e = Error::new(ErrorCode::Impersonation, "authenticated as allegro but claims to be timmy")
            .with_details(json!({"claimed": "timmy"}))
            .with_request_id("r-1");
        let s = status(&e);
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        assert!(s.message().starts_with("E5002: "));
        let back = error_from_status(&s);
        assert_eq!((back.code, back.details["claimed"].as_str()), (ErrorCode::Impersonation, Some("timmy")));
        assert_eq!(back.request_id.as_deref(), Some("r-1"));
    }

    /// Proves a plain transport status (no detail) maps to E3012, and bad args_json to E1005.
    #[test]
    fn foreign_statuses_and_bad_calls_map_to_codes() {
        assert_eq!(error_from_status(&tonic::Status::unavailable("gone")).code, ErrorCode::WorkerUnavailable);
        let call = v1::ToolCall { tool: "file_read".into(), args_json: "[1]".into(), ..Default::default() };
        assert_eq!(request_from_wire(Some(&call)).map_err(|e| e.code).err(), Some(ErrorCode::InvalidInput));
        assert_eq!(request_from_wire(None).map_err(|e| e.code).err(), Some(ErrorCode::InvalidInput));
    }

    /// Proves an error echoing a 10,000-character tool name leaves as a status whose HTTP
    /// headers stay under 8 KiB and still carry E1001, and that bounding twice changes nothing.
    #[test]
    fn errors_leave_bounded() {
        let name = "é".repeat(10_000);
        let e = Error::new(ErrorCode::UnknownTool, format!("unknown tool `{name}`"))
            .with_details(json!({ "tool": name, "known": ["file_read"], "many": vec![name.clone(); 50] }));
        let s = status(&e);
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        let http = s.into_http::<()>();
        let size: usize = http.headers().iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
        assert!(size < 8 * 1024, "{size} bytes of headers");
        let back = tonic::Status::from_header_map(http.headers()).map(|s| error_from_status(&s));
        assert_eq!(back.map(|b| b.code), Some(ErrorCode::UnknownTool));
        for b in [Bounds::BODY, Bounds::STATUS] {
            let once = bounded(&e, b);
            assert!(once.message.len() <= b.message && once.details.to_string().len() <= b.details);
            assert_eq!(bounded(&once, b), once);
        }
        let body = error_to_wire(&Error::new(ErrorCode::ToolFailed, "x".repeat(5000)));
        assert!(body.message.len() <= Bounds::BODY.message && body.message.ends_with('…'));
        let small = Error::new(ErrorCode::UnknownTool, "unknown tool `x`").with_details(json!({"tool": "x"}));
        assert_eq!(bounded(&small, Bounds::STATUS), small, "what fits is left alone");
    }

    /// Proves a house field holding no house (99) is E1002, not taken for "unspecified", a
    /// required one left unspecified is E1002 too, and a call without a tool name is E1005.
    #[test]
    fn malformed_fields_are_contract_errors() {
        assert_eq!(house_field(99, "caller_house").map_err(|e| e.code), Err(ErrorCode::UnknownHouse));
        assert_eq!(house_field(0, "caller_house").ok(), Some(None));
        assert_eq!(house_field(3, "caller_house").ok(), Some(Some(House::Ezra)));
        assert_eq!(required_house(0, "house").map_err(|e| e.code), Err(ErrorCode::UnknownHouse));
        let e = required_house(-1, "house").err().map(|e| e.details["field"].clone());
        assert_eq!(e, Some(json!("house")));
        let call = v1::ToolCall { tool: " ".into(), ..Default::default() };
        let e = request_from_wire(Some(&call)).err();
        assert_eq!(
            e.map(|e| (e.code, e.details["field"].clone())),
            Some((ErrorCode::InvalidInput, json!("call.tool")))
        );
    }

    /// Proves houses and modes map both ways and "unspecified" maps to none.
    #[test]
    fn houses_and_modes_map_both_ways() {
        for h in House::ALL {
            assert_eq!(house_from_wire(house_to_wire(h).into()), Some(h));
        }
        assert_eq!(house_from_wire(0), None);
        assert_eq!(mode_from_wire(mode_to_wire(Mode::Sovereign).into()).ok().flatten(), Some(Mode::Sovereign));
        assert!(mode_from_wire(99).is_err());
    }
}
