//! The wire contract of uni-wizard: the `uniwizard.v1` protobuf package and the prost
//! messages, tonic clients and tonic servers generated from it.
//!
//! Daemons and the operator CLI depend on this crate; the `uni_wizard` library does not,
//! so the library knows nothing of gRPC. Conversions between domain and wire types live in
//! the daemons crate, in one place.
//!
//! The code is generated at build time by `build.rs` with protox (pure Rust), so building
//! needs no system `protoc`. Health checking is the standard `grpc.health.v1` from
//! `tonic-health` and is deliberately not redefined here.
//!
//! # Layout
//!
//! - `proto/uniwizard/v1/common.proto`: `House`, `Mode`, `ErrorCategory`, `ErrorDetail`,
//!   `ToolCall`, `Outcome`, shared by every service.
//! - `proto/uniwizard/v1/router.proto`: `Router` (`Submit` with an idempotency key,
//!   `Status`) and `TaskState`.
//! - `proto/uniwizard/v1/worker.proto`: `Worker` (`Execute` with a fencing token,
//!   `Capacity`).
//! - `proto/uniwizard/v1/telemetry.proto`: `Telemetry` (client-streamed `TelemetryEvent`s
//!   with per-node sequence numbers answered by `Ack`s; `Query`) and the Hermes events.
//! - `proto/uniwizard/v1/sovereign.proto`: `Sovereign` (`RequestApproval`, `ListPending`,
//!   `Decide`): Timmy's approvals.
//! - [`v1`]: the generated code; messages at the top, `<service>_client` and
//!   `<service>_server` modules per service.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for `tonic-reflection`.
#![forbid(unsafe_code)]

/// Generated code for the `uniwizard.v1` package: one Rust type per message and enum, plus
/// `router_client`/`router_server`, `worker_client`/`worker_server`,
/// `telemetry_client`/`telemetry_server` and `sovereign_client`/`sovereign_server`.
///
/// Doc comments come from the `.proto` comments; see those files for field semantics.
pub mod v1 {
    // `missing_docs` stays on: with `-D warnings` it fails the build when a message, field,
    // enum value or rpc in a `.proto` file has no comment. The allowed lints are ones that
    // generated code can trip without anyone having written Rust: .proto comments are not
    // written as Markdown, and oneofs hold messages of very different sizes.
    #![allow(clippy::doc_lazy_continuation, clippy::doc_overindented_list_items, clippy::large_enum_variant)]
    tonic::include_proto!("uniwizard.v1");
}

/// The encoded `google.protobuf.FileDescriptorSet` of every file in `uniwizard.v1`
/// (with source comments), for gRPC server reflection:
/// `tonic_reflection::server::Builder::configure().register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("uniwizard_v1_descriptor");

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::FileDescriptorSet;

    use super::FILE_DESCRIPTOR_SET;
    use super::v1::{
        ErrorDetail, ExecuteResponse, House, Mode, Outcome, SubmitRequest, TelemetryEvent, ToolCall, execute_response,
        router_server, sovereign_server, telemetry_event, telemetry_server, worker_server,
    };

    /// Proves the embedded descriptor set decodes and declares the four services that reflection will serve.
    #[test]
    fn descriptor_set_declares_the_four_services() {
        let fds = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
        let mut services: Vec<String> = fds
            .file
            .iter()
            .filter(|file| file.package() == "uniwizard.v1")
            .flat_map(|file| file.service.iter().map(move |svc| format!("{}.{}", file.package(), svc.name())))
            .collect();
        services.sort();
        let mut expected = vec![
            router_server::SERVICE_NAME,
            worker_server::SERVICE_NAME,
            telemetry_server::SERVICE_NAME,
            sovereign_server::SERVICE_NAME,
        ];
        expected.sort_unstable();
        assert_eq!(services, expected);
    }

    /// Proves the descriptors keep the .proto comments, so reflection clients show field docs.
    #[test]
    fn descriptor_set_keeps_source_comments() {
        let fds = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
        let has_comments = fds.file.iter().any(|file| {
            file.source_code_info.as_ref().is_some_and(|info| {
                info.location.iter().any(|loc| loc.leading_comments().contains("per-node sequence"))
            })
        });
        assert!(has_comments);
    }

    /// Proves a request with nested messages, enums and an optional field survives encode/decode unchanged.
    #[test]
    fn submit_request_round_trips() {
        let request = SubmitRequest {
            call: Some(ToolCall {
                tool: "git_status".into(),
                args_json: r#"{"repo_path":"/srv/repo"}"#.into(),
                session: "s-1".into(),
                proof: String::new(),
                idempotency_key: "k-1".into(),
                dry_run: true,
                timeout_ms: 5_000,
            }),
            idempotency_key: "task-1".into(),
            preferred_house: House::Bezalel.into(),
            caller_house: House::Allegro.into(),
            mode: Mode::Intelligent.into(),
        };
        let decoded = SubmitRequest::decode(request.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded, request);
        assert_eq!(decoded.preferred_house(), House::Bezalel);
    }

    /// Proves both arms of the `result` and `kind` oneofs round-trip and stay distinguishable.
    #[test]
    fn oneofs_round_trip() {
        let ok = ExecuteResponse {
            result: Some(execute_response::Result::Outcome(Outcome {
                request_id: "r-1".into(),
                house: House::Timmy.into(),
                mode: Mode::Simple.into(),
                degraded_reason: Some("pattern DB unavailable".into()),
                warnings: vec!["low predicted success".into()],
                ..Outcome::default()
            })),
            replayed: false,
        };
        let err = ExecuteResponse {
            result: Some(execute_response::Result::Error(ErrorDetail {
                code: "E3001".into(),
                message: "timed out".into(),
                ..ErrorDetail::default()
            })),
            replayed: true,
        };
        for response in [ok, err] {
            let decoded = ExecuteResponse::decode(response.encode_to_vec().as_slice()).expect("decodes");
            assert_eq!(decoded, response);
        }

        let event = TelemetryEvent {
            node: "allegro-1".into(),
            seq: 42,
            time_unix_ms: 1_700_000_000_000,
            kind: Some(telemetry_event::Kind::HermesTokenUsage(super::v1::HermesTokenUsage {
                session_id: "20260101_000000_abcdef".into(),
                input_tokens: 1_200,
                actual_cost_usd: None,
                estimated_cost_usd: Some(0.0042),
                ..Default::default()
            })),
        };
        let decoded = TelemetryEvent::decode(event.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded, event);
    }
}
