//! git diff --raw --numstat -z output and the patch cut.
//! The body is `uni_wizard::fuzzing::git_diff`.

fn main() {
    afl::fuzz!(|data: &[u8]| uni_wizard::fuzzing::git_diff(data));
}
