//! Arguments of one of the 19 tools through the harness, down to the tool's Input.
//! The body is `uni_wizard::fuzzing::tool_args`.

fn main() {
    afl::fuzz!(|data: &[u8]| uni_wizard::fuzzing::tool_args(data));
}
