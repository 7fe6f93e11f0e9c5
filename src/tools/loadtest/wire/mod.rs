//! The wire as the load tester's clients see it: decoding subscriber streams and checking
//! every message, reading publish answers, filling in URLs. Sans-IO: nothing here touches a
//! socket except [`answer::fetch_stats`], one blocking `GET /stats`.
//!
//! - [`chunk`]: the stream decoder (response head, chunked coding, lines, WebSocket frames).
//! - [`framing`]: how a server frames messages (`--stream`), and what each unit is checked as.
//! - [`check`]: the test message format and the per-message checks (order, duplicates, latency).
//! - [`answer`]: publish answers (`{"delivered":N}`) and `/stats`.
//! - [`url`]: URL templates such as `http://127.0.0.1:8000/test/{id}`.
//! - [`resume`]: the main job's transports (`--transport`), cursors, and the SSE, WebSocket
//!   and raw cursor-mode decoders.

pub(crate) mod answer;
pub(crate) mod check;
pub(crate) mod chunk;
pub(crate) mod framing;
pub(crate) mod resume;
pub(crate) mod url;
