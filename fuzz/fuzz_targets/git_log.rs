//! git log -z output.
//! The body is `uni_wizard::fuzzing::git_log`.

fn main() {
    afl::fuzz!(|data: &[u8]| uni_wizard::fuzzing::git_log(data));
}
