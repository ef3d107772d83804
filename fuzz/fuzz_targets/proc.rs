//! The /proc and /etc parsers of system_info and process_list.
//! The body is `uni_wizard::fuzzing::proc_files`.

fn main() {
    afl::fuzz!(|data: &[u8]| uni_wizard::fuzzing::proc_files(data));
}
