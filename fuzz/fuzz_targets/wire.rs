//! A protobuf message off the wire and the conversions in wire.rs.
//! The body is `uni_wizard_daemons::fuzzing::wire`.

fn main() {
    afl::fuzz!(|data: &[u8]| uni_wizard_daemons::fuzzing::wire(data));
}
