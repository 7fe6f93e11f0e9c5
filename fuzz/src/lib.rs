//! Invariants of the server's input parsers and stream framers, checked on every fuzz input.
//! The same file is compiled into `tests/fuzz_corpus.rs`, which replays `fuzz/corpus/` in
//! the ordinary `cargo test` run.

pub mod checks;
