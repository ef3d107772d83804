//! A config file and its environment: expansion, strict parse, validation.
//! The body is `uni_wizard_daemons::fuzzing::config`.

fn main() {
    afl::fuzz!(|data: &[u8]| uni_wizard_daemons::fuzzing::config(data));
}
