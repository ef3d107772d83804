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

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use serde_json::{Value, json};
use uni_wizard::{Error, ErrorCategory, ErrorCode, House, Mode, Outcome, Request};
use uni_wizard_proto::v1;

use crate::routing::State;

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

/// The library code of a wire error, without decoding the rest (`None`: a code this build
/// does not know, from a newer peer).
pub fn error_code_of(d: &v1::ErrorDetail) -> Option<ErrorCode> {
    ErrorCode::parse(&d.code)
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
        ErrorCode::NoHealthyHouse | ErrorCode::WorkerUnavailable | ErrorCode::NotLeader => Code::Unavailable,
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
        tool: o.tool.to_string(),
        house: house_to_wire(o.house).into(),
        mode: mode_to_wire(if o.degraded.is_some() { Mode::Simple } else { o.mode }).into(),
        output_json: o.output.to_string(),
        duration_us: o.duration_us,
        attempts: o.attempts,
        degraded_reason: o.degraded.clone(),
        warnings: o.warnings.clone(),
        dry_run: o.dry_run,
        session: o.session.to_string(),
    }
}

/// The library outcome a wire outcome stands for, so a routed call renders as a local one.
/// Output that is not JSON (a peer's bug) is kept as a JSON string.
///
/// # Errors
/// E1002 when the outcome names no house, E1004 when it names no mode.
pub fn outcome_from_wire(o: &v1::Outcome) -> Result<Outcome, Error> {
    let house = required_house(o.house, "outcome.house")?;
    let mode = mode_from_wire(o.mode)?.ok_or_else(|| {
        Error::new(ErrorCode::UnknownMode, "the outcome names no mode").with_details(json!({ "field": "outcome.mode" }))
    })?;
    Ok(Outcome {
        request_id: o.request_id.clone(),
        provenance_id: o.provenance_id.clone(),
        session: o.session.as_str().into(),
        tool: o.tool.clone().into(),
        house,
        mode,
        output: serde_json::from_str(&o.output_json).unwrap_or_else(|_| Value::String(o.output_json.clone())),
        dry_run: o.dry_run,
        attempts: o.attempts,
        duration_us: o.duration_us,
        degraded: o.degraded_reason.clone(),
        warnings: o.warnings.clone(),
    })
}

/// The wire state of a router task.
pub fn task_state_to_wire(s: State) -> v1::TaskState {
    match s {
        State::Pending => v1::TaskState::Pending,
        State::Running => v1::TaskState::Running,
        State::Succeeded => v1::TaskState::Succeeded,
        State::Failed => v1::TaskState::Failed,
        State::Rejected => v1::TaskState::Rejected,
    }
}

/// The lowercase name of a wire task state, as the CLI prints it.
pub fn task_state_name(s: v1::TaskState) -> &'static str {
    match s {
        v1::TaskState::Pending => "pending",
        v1::TaskState::Running => "running",
        v1::TaskState::Succeeded => "succeeded",
        v1::TaskState::Failed => "failed",
        v1::TaskState::Rejected => "rejected",
        v1::TaskState::Unspecified => "unspecified",
    }
}

/// A library request as a wire tool call: the arguments serialized once, a timeout above
/// `u32::MAX` ms cut to it. (The call's mode, approval and parent do not travel in a
/// `ToolCall`: the mode rides in the enclosing request, the parent is the router's task.)
pub fn request_to_wire(r: &Request) -> v1::ToolCall {
    v1::ToolCall {
        tool: r.tool.clone(),
        args_json: r.args.to_string(),
        session: r.session.clone().unwrap_or_default(),
        proof: r.proof.clone().unwrap_or_default(),
        idempotency_key: r.idempotency_key.clone().unwrap_or_default(),
        dry_run: r.dry_run,
        timeout_ms: r.timeout.map_or(0, |t| u32::try_from(t.as_millis()).unwrap_or(u32::MAX)),
    }
}

/// A library approval request as the worker asks Timmy's Sovereign service: as `house`,
/// willing to wait `wait` for the decision (cut to `u32::MAX` ms).
pub fn approval_request_to_wire(
    r: &uni_wizard::approval::ApprovalRequest,
    house: House,
    wait: Duration,
) -> v1::ApprovalRequest {
    v1::ApprovalRequest {
        request_id: r.request_id.clone(),
        requesting_house: house_to_wire(house).into(),
        tool: r.tool.clone(),
        args_sha256: r.args_sha256.clone(),
        // Every value: Timmy checks the hash against them and keeps only the redacted form.
        args_json: r.call_args.to_string(),
        reason: r.reason.clone(),
        wait_timeout_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
        node: r.node.clone(),
    }
}

/// The lowercase name of an approval decision, as the CLI prints it.
pub fn decision_name(d: v1::ApprovalDecision) -> &'static str {
    match d {
        v1::ApprovalDecision::Approved => "approved",
        v1::ApprovalDecision::Denied => "denied",
        v1::ApprovalDecision::Expired => "expired",
        v1::ApprovalDecision::Pending => "pending",
        v1::ApprovalDecision::Unspecified => "unspecified",
    }
}

/// What a house submits to the router besides the call.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The submitting house (it must authenticate as this house).
    pub caller: House,
    /// The task's idempotency key: one task per `(caller, key)`.
    pub key: String,
    /// The house to prefer for running it.
    pub preferred: Option<House>,
    /// The mode; `None` for the worker's default.
    pub mode: Option<Mode>,
}

/// The one `SubmitRequest` builder (the CLI's `test --router` and triage both use it).
pub fn submit_request(s: &Submission, call: &Request) -> v1::SubmitRequest {
    v1::SubmitRequest {
        call: Some(request_to_wire(call)),
        idempotency_key: s.key.clone(),
        preferred_house: s.preferred.map_or(v1::House::Unspecified, house_to_wire).into(),
        caller_house: house_to_wire(s.caller).into(),
        mode: s.mode.map_or(v1::Mode::Unspecified, mode_to_wire).into(),
    }
}

/// The wire form of one harness execution; the fingerprint travels as the pattern DB's own
/// `u64` key, so the sink feeds it back unchanged.
pub fn execution_to_wire(e: &uni_wizard::Execution) -> v1::ExecutionEvent {
    v1::ExecutionEvent {
        request_id: e.request_id.clone(),
        provenance_id: e.provenance_id.clone(),
        task_id: e.parent.clone().unwrap_or_default(),
        session: e.session.clone(),
        tool: e.tool.clone(),
        house: house_to_wire(e.house).into(),
        mode: mode_to_wire(e.mode).into(),
        args_fingerprint: e.fingerprint,
        success: e.success,
        error_code: e.error_code.map(|c| c.as_str().to_owned()).unwrap_or_default(),
        duration_us: e.duration_us,
        attempts: e.attempts,
        degraded_reason: e.degraded.clone(),
        dry_run: e.dry_run,
    }
}

/// The pattern-DB row of a fleet execution; none for calls refused before execution (the
/// harness records only executed calls) or with no fingerprint (0, which no call has: an
/// older node's event), house or mode.
pub fn execution_row(x: &v1::ExecutionEvent, time_ms: i64, node: &Arc<str>) -> Option<uni_wizard::intelligence::Row> {
    use uni_wizard::intelligence::OutcomeClass;
    if x.provenance_id.is_empty() || x.args_fingerprint == uni_wizard::intelligence::predictions::AGGREGATE {
        return None;
    }
    let house = house_from_wire(x.house)?;
    let mode = mode_from_wire(x.mode).ok().flatten()?;
    let code = ErrorCode::parse(&x.error_code);
    let class = match (x.success, code) {
        (true, _) => OutcomeClass::Ok,
        (false, Some(c)) if c.is_transient() => OutcomeClass::Transient,
        (false, _) => OutcomeClass::Permanent,
    };
    Some(uni_wizard::intelligence::Row {
        time_ms: u64::try_from(time_ms).unwrap_or(0),
        tool: Cow::Owned(x.tool.clone()),
        house,
        mode,
        fingerprint: x.args_fingerprint,
        class,
        error_code: code.map(ErrorCode::as_str),
        latency_us: x.duration_us,
        node: node.clone(),
    })
}

/// A tool call's shape, checked where it is only passed on (the router): present, naming a
/// tool, its `args_json` empty or a JSON object. The arguments are scanned, not built into a
/// value: the worker that runs the call parses them, once. Never stricter than
/// [`request_from_wire`]; arguments nested deeper than its 128 levels pass here and are the
/// worker's E1005.
///
/// # Errors
/// As [`request_from_wire`].
pub fn check_call(call: Option<&v1::ToolCall>) -> Result<&v1::ToolCall, Error> {
    let call = present(call)?;
    if !call.args_json.trim().is_empty() {
        serde_json::from_str::<JsonObject>(&call.args_json).map_err(|e| args_error(&e))?;
    }
    Ok(call)
}

/// Accepts any JSON object, keeping nothing of it.
struct JsonObject;

impl<'de> serde::Deserialize<'de> for JsonObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<JsonObject, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = JsonObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<JsonObject, A::Error> {
                use serde::de::IgnoredAny;
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(JsonObject)
            }
        }
        d.deserialize_any(Visit)
    }
}

/// E1005 for arguments that do not parse (syntax) or are JSON but no object (data).
fn args_error(e: &serde_json::Error) -> Error {
    let field = json!({ "field": "call.args_json" });
    if e.is_data() {
        Error::new(ErrorCode::InvalidInput, "`args_json` must be a JSON object").with_details(field)
    } else {
        Error::new(ErrorCode::InvalidInput, format!("`args_json` is not JSON: {e}")).with_details(field)
    }
}

/// The call, present and naming a tool.
fn present(call: Option<&v1::ToolCall>) -> Result<&v1::ToolCall, Error> {
    let call = call.ok_or_else(|| {
        Error::new(ErrorCode::InvalidInput, "the request carries no `call`").with_details(json!({ "field": "call" }))
    })?;
    if call.tool.trim().is_empty() {
        return Err(Error::new(ErrorCode::InvalidInput, "`call.tool` is required")
            .with_details(json!({ "field": "call.tool" })));
    }
    id_field("call.session", &call.session)?;
    id_field("call.proof", &call.proof)?;
    id_field("call.idempotency_key", &call.idempotency_key)?;
    Ok(call)
}

/// E1005 when `value` holds a control character (a newline, an escape, NUL): names and ids
/// end up in logs and on Timmy's terminal, where one could forge a line or move the cursor.
///
/// # Errors
/// E1005 naming the field.
pub fn printable(field: &str, value: &str) -> Result<(), Error> {
    if value.chars().any(char::is_control) {
        return Err(Error::new(ErrorCode::InvalidInput, format!("`{field}` holds a control character"))
            .with_details(json!({ "field": field })));
    }
    Ok(())
}

/// Longest id, key, session or proof a request may carry: they are stored with every task and
/// record, so a megabyte of one would be kept (and echoed) as often.
pub const MAX_ID_LEN: usize = 256;

/// E1005 when the id-like field `field` is longer than [`MAX_ID_LEN`].
///
/// # Errors
/// E1005 naming the field and the limit.
pub fn id_field(field: &str, value: &str) -> Result<(), Error> {
    if value.len() > MAX_ID_LEN {
        return Err(Error::new(ErrorCode::InvalidInput, format!("`{field}` is longer than {MAX_ID_LEN} bytes"))
            .with_details(json!({ "field": field, "limit": MAX_ID_LEN, "length": value.len() })));
    }
    Ok(())
}

/// A wire tool call as a library request.
///
/// # Errors
/// E1005 when the call is missing, names no tool or its `args_json` is not a JSON object.
pub fn request_from_wire(call: Option<&v1::ToolCall>) -> Result<Request, Error> {
    let call = present(call)?;
    let args: Value = if call.args_json.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(&call.args_json).map_err(|e| args_error(&e))?
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
    req.timeout = (call.timeout_ms > 0).then(|| Duration::from_millis(u64::from(call.timeout_ms)));
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

    /// Proves the router's scan of a call agrees with the worker's parse (same code, field and
    /// message) on empty, nested, non-object and malformed arguments.
    #[test]
    fn checking_a_call_agrees_with_parsing_it() {
        for args in
            ["", "  ", "{}", r#"{"path": "a", "n": [1, {"x": null}]}"#, "[1]", "3", "\"s\"", "{", "nope", "{} x"]
        {
            let call = v1::ToolCall { tool: "file_read".into(), args_json: args.into(), ..Default::default() };
            let checked = check_call(Some(&call)).map(|_| ()).map_err(|e| (e.code, e.details, e.message));
            let parsed = request_from_wire(Some(&call)).map(|_| ()).map_err(|e| (e.code, e.details, e.message));
            assert_eq!(checked, parsed, "{args:?}");
        }
        assert_eq!(check_call(None).map_err(|e| e.code).err(), Some(ErrorCode::InvalidInput));
        let unnamed = v1::ToolCall { args_json: "{}".into(), ..Default::default() };
        assert_eq!(check_call(Some(&unnamed)).err().map(|e| e.details["field"].clone()), Some(json!("call.tool")));
    }

    /// Proves a request crosses to the wire and back unchanged (arguments, session, proof,
    /// key, dry run, timeout), and the submission builder fills every routing field.
    #[test]
    fn requests_and_submissions_cross_the_wire_unchanged() {
        let mut r = Request::new("file_read", json!({"path": "a.txt", "max_bytes": 10}));
        r.session = Some("s-1".into());
        r.proof = Some("p-1".into());
        r.idempotency_key = Some("k-1".into());
        r.dry_run = true;
        r.timeout = Some(Duration::from_millis(1500));
        let s = Submission { caller: House::Allegro, key: "t-1".into(), preferred: Some(House::Ezra), mode: None };
        let req = submit_request(&s, &r);
        let back = request_from_wire(req.call.as_ref()).expect("valid");
        assert_eq!(
            (back.tool.as_str(), &back.args, &back.session, &back.proof),
            (r.tool.as_str(), &r.args, &r.session, &r.proof)
        );
        assert_eq!((&back.idempotency_key, back.dry_run, back.timeout), (&r.idempotency_key, true, r.timeout));
        assert_eq!((req.idempotency_key.as_str(), house_from_wire(req.caller_house)), ("t-1", Some(House::Allegro)));
        assert_eq!(
            (house_from_wire(req.preferred_house), mode_from_wire(req.mode).ok()),
            (Some(House::Ezra), Some(None))
        );
    }

    /// Proves an outcome crosses the wire and back whole, output that is not JSON is kept as
    /// a string, and an outcome naming no house or mode is refused.
    #[test]
    fn outcomes_cross_the_wire_and_back() {
        let o = Outcome {
            request_id: "r".into(),
            provenance_id: "p".into(),
            session: "s".into(),
            tool: "file_read".into(),
            house: House::Ezra,
            mode: Mode::Intelligent,
            output: json!({"content": "hi"}),
            dry_run: false,
            attempts: 2,
            duration_us: 1234,
            degraded: None,
            warnings: vec!["w".into()],
        };
        assert_eq!(outcome_from_wire(&outcome_to_wire(&o)).ok(), Some(o.clone()));
        let odd = v1::Outcome { output_json: "not json".into(), ..outcome_to_wire(&o) };
        assert_eq!(outcome_from_wire(&odd).map(|x| x.output).ok(), Some(json!("not json")));
        let no_house = v1::Outcome { house: 0, ..outcome_to_wire(&o) };
        assert_eq!(outcome_from_wire(&no_house).map_err(|e| e.code).err(), Some(ErrorCode::UnknownHouse));
        let no_mode = v1::Outcome { mode: 0, ..outcome_to_wire(&o) };
        assert_eq!(outcome_from_wire(&no_mode).map_err(|e| e.code).err(), Some(ErrorCode::UnknownMode));
    }

    /// Proves an execution's fingerprint reaches the pattern row as the same `u64`, and an
    /// event without one (0: an older node's) or refused before execution yields no row.
    #[test]
    fn executions_keep_their_fingerprint() {
        let node: Arc<str> = Arc::from("n");
        let x = v1::ExecutionEvent {
            provenance_id: "p".into(),
            tool: "git_status".into(),
            house: v1::House::Bezalel.into(),
            mode: v1::Mode::Intelligent.into(),
            args_fingerprint: 0xfedc_ba98_7654_3210,
            success: true,
            ..Default::default()
        };
        assert_eq!(execution_row(&x, 5, &node).map(|r| r.fingerprint), Some(0xfedc_ba98_7654_3210));
        assert!(execution_row(&v1::ExecutionEvent { args_fingerprint: 0, ..x.clone() }, 5, &node).is_none());
        assert!(execution_row(&v1::ExecutionEvent { provenance_id: String::new(), ..x }, 5, &node).is_none());
    }
}
