//! Per-id history and cursors (sans-IO): what lets a subscriber that reconnects get every
//! message it missed, or be told in band that it cannot.
//!
//! # Files
//! - [`cursor`]: positions (`<epoch>-<offset>`) and a connection's cursor, parsed and written.
//! - [`store`]: one shard's history of the ids it owns: numbering, epochs, the bounds (count
//!   per id, TTL, bytes per shard) and the resume verdict.

pub mod cursor;
pub mod store;

pub use cursor::{CursorError, Pin, Pos, Resume, Start};
pub use store::{History, HistoryConfig, Reason};
