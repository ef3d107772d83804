//! A webhook delivery: headers, HMAC, JSON payload, decision.
//! The body is `uni_wizard_daemons::fuzzing::webhook`.

fn main() {
    afl::fuzz!(|data: &[u8]| uni_wizard_daemons::fuzzing::webhook(data));
}
