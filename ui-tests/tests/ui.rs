//! Compile-time guarantees: every case in `fail/` must be rejected with the message in its
//! `.stderr` file, every case in `pass/` must compile. Regenerate expected output with
//! `TRYBUILD=overwrite cargo test -p goka-ui-tests` and review the diff.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/pass/*.rs");
    cases.compile_fail("tests/fail/*.rs");
}
