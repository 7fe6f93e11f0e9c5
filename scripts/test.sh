#!/usr/bin/env bash
# The project's test command (README): unit tests, integration tests against the real
# server on 127.0.0.1 port 0, and doc tests. Release mode: the concurrency tests open
# thousands of connections and run faster optimised.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --all-targets
cargo test --release --doc
