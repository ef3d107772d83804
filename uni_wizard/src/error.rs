//! Structured, stable errors: `{code, category, message, details, request_id}`.
//!
//! Every code is listed once, in [`ErrorCode`], with its category and whether a retry can help.
//! `docs/ERRORS.md` documents each code with its cause and fix; a test keeps the two in step.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The family an error code belongs to: the first digit of the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// E1xxx: the request itself is malformed (bad input, unknown names).
    Contract,
    /// E2xxx: the request is well formed but not allowed (house, mode, approval, proof, roots).
    Policy,
    /// E3xxx: the request was allowed but running it failed.
    Execution,
    /// E4xxx: configuration or deployment is wrong.
    Config,
    /// E5xxx: the caller could not be authenticated.
    Auth,
}

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $name:ident = $code:literal, $cat:ident, $transient:literal; )*) => {
        /// A stable error code. The string form (`E1001`) never changes meaning once released.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $name, )*
        }

        impl ErrorCode {
            /// Every code, in order; used by the docs test and the CLI.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The stable string form, e.g. `"E1001"`.
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$name => $code,)* }
            }

            /// The family of this code.
            pub const fn category(self) -> Category {
                match self { $(ErrorCode::$name => Category::$cat,)* }
            }

            /// Whether the same call may succeed if simply tried again later.
            pub const fn is_transient(self) -> bool {
                match self { $(ErrorCode::$name => $transient,)* }
            }

            /// Parses the string form back; `None` for an unknown code.
            pub fn parse(s: &str) -> Option<ErrorCode> {
                match s { $($code => Some(ErrorCode::$name),)* _ => None }
            }
        }
    };
}

error_codes! {
    /// No tool of that name is registered.
    UnknownTool = "E1001", Contract, false;
    /// No house of that name exists.
    UnknownHouse = "E1002", Contract, false;
    /// The arguments do not match the tool's input schema.
    InvalidArguments = "E1003", Contract, false;
    /// No mode of that name exists.
    UnknownMode = "E1004", Contract, false;
    /// A command-line argument could not be parsed (e.g. `--arg` without `=`).
    InvalidInput = "E1005", Contract, false;
    /// `dry_run` was asked of a mutating tool that cannot simulate itself.
    DryRunUnsupported = "E1006", Contract, false;

    /// The house may not use this tool at all.
    ToolNotAllowed = "E2001", Policy, false;
    /// The call needs Timmy's approval and has none.
    ApprovalRequired = "E2002", Policy, false;
    /// An approval was presented but is not valid (wrong approver, tool, arguments, expired).
    ApprovalInvalid = "E2003", Policy, false;
    /// Ezra's mutating call did not carry `expected_sha256` of what it read.
    ReadBeforeWriteRequired = "E2004", Policy, false;
    /// The target changed since it was read: `expected_sha256` no longer matches.
    StaleRead = "E2005", Policy, false;
    /// Bezalel's mutating call did not cite a proof (a prior successful check).
    ProofRequired = "E2006", Policy, false;
    /// The cited proof is unknown, failed, from another session, or older than the last write.
    ProofInvalid = "E2007", Policy, false;
    /// A path resolves outside the configured roots (`..`, absolute path, or symlink).
    PathOutsideRoots = "E2008", Policy, false;
    /// An HTTP target is not on the egress allowlist, or resolves to a refused address.
    EgressDenied = "E2009", Policy, false;

    /// The call did not finish within its timeout.
    Timeout = "E3001", Execution, true;
    /// The circuit breaker for this tool and target is open.
    BreakerOpen = "E3002", Execution, true;
    /// The tool ran and failed; `details` carries the underlying reason.
    ToolFailed = "E3003", Execution, false;
    /// The tool failed for a reason that may pass (interrupted I/O, connection reset).
    ToolFailedTransient = "E3004", Execution, true;
    /// The executor is saturated: no concurrency slot freed in time.
    Saturated = "E3005", Execution, true;
    /// The target does not exist (file, directory, repository).
    NotFound = "E3006", Execution, false;
    /// The host cannot run this tool (e.g. systemd is not PID 1).
    Unsupported = "E3007", Execution, false;
    /// Provenance could not be recorded, so a Sovereign call failed closed.
    ProvenanceUnavailable = "E3008", Execution, false;
    /// The output would exceed the tool's size limit.
    OutputTooLarge = "E3009", Execution, false;
    /// Predicted success is below the policy threshold, so Intelligent mode refused.
    PredictedFailure = "E3010", Execution, false;
    /// No house that fits the task is up (router).
    NoHealthyHouse = "E3011", Execution, true;
    /// The worker could not be reached, or was lost while running the call (router).
    WorkerUnavailable = "E3012", Execution, true;
    /// The dispatching router's fencing token is older than one the worker has seen.
    FencedOut = "E3013", Execution, false;
    /// This router does not lead the fleet now: another does (`details` name it) or none does
    /// (etcd out of reach, an election under way). Nothing ran; submit to the leader, or later.
    NotLeader = "E3014", Execution, true;
    /// The worker's exactly-once store cannot record a keyed call, so it is refused unrun.
    OnceUnavailable = "E3015", Execution, true;

    /// The configuration is invalid; `details` names the field.
    ConfigInvalid = "E4001", Config, false;
    /// The state directory (`$UNI_WIZARD_HOME`) cannot be created or used.
    HomeUnavailable = "E4002", Config, false;
    /// A configured file root does not exist or is not a directory.
    RootUnavailable = "E4003", Config, false;

    /// The caller presented no credentials or unknown ones.
    Unauthenticated = "E5001", Auth, false;
    /// The caller is authenticated as one house but claims to be another.
    Impersonation = "E5002", Auth, false;
    /// The caller is authenticated but its house may not make this call.
    Forbidden = "E5003", Auth, false;
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ErrorCode::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown code {s}")))
    }
}

/// The one error type of the library.
///
/// `details` is free-form JSON naming the field, path, limit or underlying message; it never
/// carries secrets. `request_id` is filled in by the harness for every error it returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Error {
    /// The stable code.
    pub code: ErrorCode,
    /// Derived from the code; kept in the serialised form for readers of JSON.
    pub category: Category,
    /// One sentence for a person.
    pub message: String,
    /// Machine-readable specifics; `null` when there are none.
    #[serde(default)]
    pub details: Value,
    /// The request this error answers, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Error {
    /// A new error with no details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        Error { code, category: code.category(), message: message.into(), details: Value::Null, request_id: None }
    }

    /// Attaches machine-readable details.
    #[must_use]
    pub fn with_details(mut self, details: Value) -> Error {
        self.details = details;
        self
    }

    /// Attaches the request id (the harness does this for every error it returns).
    #[must_use]
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Error {
        self.request_id = Some(request_id.into());
        self
    }

    /// Whether retrying the same call may succeed.
    pub fn is_transient(&self) -> bool {
        self.code.is_transient()
    }

    /// Maps an I/O error from a tool to a code: missing targets, transient and other failures.
    pub fn from_io(context: impl Into<String>, err: &std::io::Error) -> Error {
        use std::io::ErrorKind as K;
        let code = match err.kind() {
            K::NotFound => ErrorCode::NotFound,
            K::Interrupted
            | K::WouldBlock
            | K::TimedOut
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::ResourceBusy => ErrorCode::ToolFailedTransient,
            _ => ErrorCode::ToolFailed,
        };
        let context = context.into();
        Error::new(code, format!("{context}: {err}"))
            .with_details(serde_json::json!({ "io_error": err.to_string(), "kind": format!("{:?}", err.kind()) }))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Most characters of a caller's input an error repeats (see [`echo`]).
pub const ECHO_LIMIT: usize = 128;

/// A caller's input (a tool name, an id) as an error may repeat it: whole up to
/// [`ECHO_LIMIT`] characters, else its first `ECHO_LIMIT - 1` and `…`. An error that echoed
/// its input whole would be as large as the caller likes, and over gRPC a status travels in
/// HTTP/2 trailers, which peers cap at a few KiB.
pub fn echo(input: &str) -> String {
    match input.char_indices().nth(ECHO_LIMIT) {
        None => input.to_owned(),
        Some(_) => {
            let cut = input.char_indices().nth(ECHO_LIMIT - 1).map_or(input.len(), |(i, _)| i);
            format!("{}…", &input[..cut])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves each code's string form parses back to the same code and sits in its category.
    #[test]
    fn codes_round_trip_and_match_their_category() {
        for &code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            let digit = code.as_str().as_bytes()[1];
            let expected = match code.category() {
                Category::Contract => b'1',
                Category::Policy => b'2',
                Category::Execution => b'3',
                Category::Config => b'4',
                Category::Auth => b'5',
            };
            assert_eq!(digit, expected, "{code} is in the wrong family");
        }
    }

    /// Proves docs/ERRORS.md documents every code under its own heading (the CLI links there).
    #[test]
    fn every_code_is_documented() {
        let doc = include_str!("../../docs/ERRORS.md");
        for code in ErrorCode::ALL {
            assert!(doc.contains(&format!("\n## {code}\n")), "docs/ERRORS.md lacks a `## {code}` section");
        }
    }

    /// Proves an echoed input is kept whole up to the limit and cut to exactly the limit, with
    /// `…`, beyond it (also inside a multi-byte character's string).
    #[test]
    fn echo_bounds_what_an_error_repeats() {
        let at = "x".repeat(ECHO_LIMIT);
        assert_eq!(echo(&at), at);
        let long = "é".repeat(10_000);
        let cut = echo(&long);
        assert_eq!(cut.chars().count(), ECHO_LIMIT);
        assert!(cut.ends_with('…') && long.starts_with(cut.trim_end_matches('…')));
        assert_eq!(echo(&cut), cut, "echoing twice changes nothing");
    }

    /// Proves no two variants share a code string.
    #[test]
    fn codes_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate {code}");
        }
    }
}
