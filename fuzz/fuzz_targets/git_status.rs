//! git status --porcelain=v2 -z output.
//! The body is `uni_wizard::fuzzing::git_status`.

fn main() {
    afl::fuzz!(|data: &[u8]| uni_wizard::fuzzing::git_status(data));
}
