#!/usr/bin/env bash
# The server core never imports the tools (STYLE habit 27): no file under src/ outside
# src/tools/ and src/main.rs names `crate::tools` or `uring_comet::tools`. The tools import the
# core, never the reverse, so `cargo build --no-default-features` can leave them out.
# Assumes: run from anywhere inside the repository. Exits 1 and names each offending line.
set -euo pipefail
cd "$(dirname "$0")/.."
hits=$(grep -rnE '(crate|uring_comet)::tools\b' src --include='*.rs' | grep -vE '^src/(tools/|main\.rs:)' || true)
if [ -n "$hits" ]; then
  echo "the server core imports the tools:"
  echo "$hits"
  exit 1
fi
echo "layering: the server core imports nothing from src/tools/"
