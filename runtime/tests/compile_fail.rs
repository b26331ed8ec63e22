//! Misuse of a `ValueTask` that the type system refuses (DESIGN.md, "ValueTask<T>"):
//! awaiting one twice, cloning one, and converting one with `as_task()` after awaiting it.
//!
//! Each case is a file in `tests/compile_fail/` with the compiler's expected error next to
//! it (`.stderr`). After a toolchain upgrade changes the wording, regenerate them with
//! `TRYBUILD=overwrite cargo test -p taskcheck --test compile_fail` and review the diff.

#![cfg(not(any(loom, shuttle)))]

#[test]
fn value_task_misuse_does_not_compile() {
    trybuild::TestCases::new().compile_fail("tests/compile_fail/*.rs");
}
