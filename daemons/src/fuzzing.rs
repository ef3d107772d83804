//! Fuzz target bodies for the daemons' side of the edge: config files, webhook deliveries and
//! messages off the wire. `docs/FUZZING.md` says how to run them; the library's targets (tool
//! arguments, `/proc` and git parsers) are in `uni_wizard::fuzzing`.
//!
//! Each `pub fn <target>(data: &[u8])` takes the fuzzer's bytes and only *calls* the code under
//! test; a panic is a finding. The afl binaries in `fuzz/` are one line each, and
//! `daemons/tests/fuzz_corpus.rs` replays every seed and every past crash through these
//! functions on each `cargo test`, so both compile in every build.
//!
//! Beyond "no panic", each target checks a promise: a config is either valid and usable or
//! refused with E4001; a delivery signed with the right secret is never refused as unsigned;
//! an error keeps its code, message and request id through `ErrorDetail`, a gRPC status and
//! the status's HTTP headers.

use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use prost::Message;
use uni_wizard::ErrorCode;
use uni_wizard_proto::v1;

use crate::config::DaemonConfig;
use crate::config::triage::TriageConfig;
use crate::triage::webhook;
use crate::wire;

/// The file name errors name; no such file exists, so no line is looked up on disk.
const FILE: &str = "<fuzz>/node.yaml";

/// A config file and its environment: `NAME=VALUE` lines, a NUL, then the YAML text (no NUL:
/// all YAML, empty environment). A variable listed without `=` is unset; any other name is
/// set to a value of its own (16+ characters, so tokens from the environment pass). Runs
/// [`DaemonConfig::parse`] (expansion, strict parse, validation) and the library config's
/// load path (expansion, parse, [`uni_wizard::Config::validate`]); a config that passes is
/// then used as the daemon would start with it: its roles, its own house entry, the
/// executor built from its library settings.
pub fn config(data: &[u8]) {
    let (env, yaml) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[][..], data),
    };
    let env = String::from_utf8_lossy(env);
    let lookup = |name: &str| {
        for line in env.lines() {
            match line.split_once('=') {
                Some((n, v)) if n == name => return Some(v.to_owned()),
                None if line == name => return None,
                _ => {}
            }
        }
        Some(format!("{name}-fuzz-value-0123456789"))
    };
    let text = String::from_utf8_lossy(yaml);

    match DaemonConfig::parse(&text, FILE, &lookup) {
        Ok(c) => {
            std::hint::black_box((c.roles(), c.me(), c.probe_interval()));
            let _ = uni_wizard::executor::Executor::new(&c.worker.library.executor);
        }
        Err(e) => assert_eq!(e.code, ErrorCode::ConfigInvalid, "a config refused without E4001: {e:?}"),
    }

    let library = crate::config::expand(&text, FILE, &lookup)
        .and_then(|t| crate::config::parse::<uni_wizard::Config>(&t, FILE))
        .and_then(|c| c.validate().map(|()| c));
    match library {
        Ok(c) => {
            let _ = uni_wizard::executor::Executor::new(&c.executor);
        }
        Err(e) => assert_eq!(e.code, ErrorCode::ConfigInvalid, "a library config refused without E4001: {e:?}"),
    }
}

/// The webhook secret of [`webhook`]'s settings, the one Gitea's samples are signed with.
pub const WEBHOOK_SECRET: &str = "test-webhook-secret";

fn webhook_settings() -> &'static TriageConfig {
    static SETTINGS: OnceLock<TriageConfig> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let yaml = format!(
            "gitea: {{base_url: 'http://127.0.0.1:3000', token: gitea-token}}\n\
             webhook_secret: {WEBHOOK_SECRET}\nbot_user: timmy-bot\nrepos: [acme/widgets]\nmax_body_bytes: 65536\n"
        );
        match crate::config::parse::<TriageConfig>(&yaml, FILE) {
            Ok(t) => t,
            Err(e) => panic!("fuzzing: the webhook settings do not parse: {e}"),
        }
    })
}

/// A webhook delivery: byte 0 holds flags (bit 0: sign the body with the right secret,
/// replacing any `X-Gitea-Signature`), then `Name: value` header lines up to an empty line,
/// then the body. Header lines that HTTP/1 would refuse are dropped, as hyper drops the
/// request. Runs what `POST /webhooks/gitea` runs without the socket and the store: the size
/// check on the headers, then [`webhook::inspect`] (HMAC in constant time, delivery id, JSON,
/// payload shape, bot, event, repository and pull-request filters).
pub fn webhook(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else { return };
    let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&rest[..i], &rest[i + 2..]),
        None => (rest, &[][..]),
    };
    let mut headers = HeaderMap::new();
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    let signed = flags & 1 != 0;
    if signed && let Ok(v) = HeaderValue::from_str(&webhook::sign(WEBHOOK_SECRET.as_bytes(), body)) {
        headers.insert("x-gitea-signature", v);
    }
    let settings = webhook_settings();
    if webhook::check_declared_size(settings, &headers).is_err() || body.len() > settings.max_body_bytes {
        return; // 413: the body is not looked at.
    }
    match webhook::inspect(settings, &headers, body) {
        Ok(d) => {
            assert!(!d.id.is_empty() && d.id.len() <= 200, "delivery id {:?}", d.id);
            assert!(d.event.chars().count() <= 64, "event {:?}", d.event);
            if let Ok((repo, _)) = &d.decision {
                assert!(settings.repos.contains(repo), "queued for a repository not watched: {repo}");
            }
        }
        Err(r) => assert!(
            !(signed && r.status == StatusCode::UNAUTHORIZED),
            "a delivery signed with the right secret was refused: {r:?}"
        ),
    }
}

/// A message off the wire: byte 0 picks the message type, the rest is its protobuf encoding
/// (or, for a status, byte 1 is the gRPC code and the rest its details). Decodes with prost
/// and runs the conversions in `wire.rs` the services run on it: `request_from_wire`
/// (`args_json`) beside the router's `check_call`, `mode_from_wire`, `house_from_wire`,
/// `house_field`, `error_from_wire`, `outcome_from_wire`, `error_from_status`, and
/// `execution_row` for telemetry executions.
/// An error read off the wire must keep its code, message (as bounded, `wire::Bounds`) and
/// request id when sent on again, through `ErrorDetail`, a `Status` and that status's HTTP
/// headers.
pub fn wire(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else { return };
    match which % 7 {
        0 => {
            let Ok(req) = v1::ExecuteRequest::decode(bytes) else { return };
            let _ = wire::mode_from_wire(req.mode);
            let _ = (wire::house_from_wire(req.house), wire::house_from_wire(req.caller_house));
            house(req.caller_house);
            call(req.call.as_ref());
        }
        1 => {
            let Ok(req) = v1::SubmitRequest::decode(bytes) else { return };
            let _ = wire::mode_from_wire(req.mode);
            let _ = (wire::house_from_wire(req.preferred_house), wire::house_from_wire(req.caller_house));
            call(req.call.as_ref());
        }
        2 => {
            let Ok(resp) = v1::ExecuteResponse::decode(bytes) else { return };
            match resp.result {
                Some(v1::execute_response::Result::Outcome(o)) => outcome(&o),
                Some(v1::execute_response::Result::Error(d)) => error_detail(&d),
                None => {}
            }
        }
        3 => {
            let Ok(d) = v1::ErrorDetail::decode(bytes) else { return };
            error_detail(&d);
        }
        4 => {
            let Some((&code, details)) = bytes.split_first() else { return };
            let s = tonic::Status::with_details(tonic::Code::from(i32::from(code)), "fuzz", details.to_vec().into());
            let _ = wire::error_from_status(&s);
        }
        5 => {
            let Ok(o) = v1::Outcome::decode(bytes) else { return };
            outcome(&o);
        }
        _ => {
            let Ok(ev) = v1::TelemetryEvent::decode(bytes) else { return };
            let _ = crate::telemetry::sink::kind_name(ev.kind.as_ref());
            if let Some(v1::telemetry_event::Kind::Execution(x)) = &ev.kind {
                let _ = wire::execution_row(x, ev.time_unix_ms, &"fuzz-node".into());
            }
        }
    }
}

fn house(raw: i32) {
    match wire::house_field(raw, "caller_house") {
        Ok(h) => assert_eq!(h, wire::house_from_wire(raw), "house {raw}"),
        Err(e) => assert_eq!(e.code, ErrorCode::UnknownHouse, "house {raw} refused without E1002: {e:?}"),
    }
}

fn call(call: Option<&v1::ToolCall>) {
    let checked = wire::check_call(call);
    if let Err(e) = &checked {
        assert_eq!(e.code, ErrorCode::InvalidInput, "the router refused a call without E1005: {e:?}");
    }
    match wire::request_from_wire(call) {
        Ok(req) => {
            assert!(req.args.is_object(), "args_json became {}", req.args);
            assert!(checked.is_ok(), "the router's check refused what the worker parses");
        }
        Err(e) => assert_eq!(e.code, ErrorCode::InvalidInput, "a bad call refused without E1005: {e:?}"),
    }
}

fn outcome(o: &v1::Outcome) {
    match wire::outcome_from_wire(o) {
        Ok(x) => {
            let again = wire::outcome_from_wire(&wire::outcome_to_wire(&x)).map(|y| y.output);
            assert_eq!(again.ok().as_ref(), Some(&x.output), "the output changed on its way back");
        }
        Err(e) => assert!(
            matches!(e.code, ErrorCode::UnknownHouse | ErrorCode::UnknownMode),
            "an outcome refused without E1002/E1004: {e:?}"
        ),
    }
}

/// What must survive a hop: code, message and request id.
fn same(e: &uni_wizard::Error) -> (ErrorCode, &str, Option<&str>) {
    (e.code, e.message.as_str(), e.request_id.as_deref())
}

fn error_detail(d: &v1::ErrorDetail) {
    let e = wire::error_from_wire(d);
    let again = wire::error_from_wire(&wire::error_to_wire(&e));
    assert_eq!(same(&again), same(&wire::bounded(&e, wire::Bounds::BODY)), "through ErrorDetail");
    let status = wire::status(&e);
    let sent = wire::bounded(&e, wire::Bounds::STATUS);
    assert_eq!(same(&wire::error_from_status(&status)), same(&sent), "through a Status");
    // As the server sends it (auth.rs) and a client reads it back.
    let http = status.into_http::<()>();
    if let Some(back) = tonic::Status::from_header_map(http.headers()) {
        let back = wire::error_from_status(&back);
        assert_eq!(back.code, e.code, "through the status's HTTP headers");
    }
}
