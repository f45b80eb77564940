#!/usr/bin/env bash
# Every GPU check in one call, for a machine with an NVIDIA driver but no Rust toolchain and no
# network: give it the CUDA binary that `cargo xtask gpu-bundle` built (target/gpu/sculpt.gz).
# Writes $OUT/gpu-report.md (or ./gpu-report.md) with the parity table's raw rows and timings.
#
#   bash scripts/gpu-check.sh target/gpu/sculpt.gz
set -uo pipefail
cd "$(dirname "$0")/.."
BIN_SRC="${1:?usage: scripts/gpu-check.sh <sculpt binary or .gz>}"
OUT="${OUT:-.}"
BIN="$(mktemp -d)/sculpt"
if [[ "$BIN_SRC" == *.gz ]]; then gunzip -c "$BIN_SRC" > "$BIN"; else cp "$BIN_SRC" "$BIN"; fi
chmod +x "$BIN"
REPORT="$OUT/gpu-report.md"
export SCULPT_LOG=warn
{
  echo "# sculpt GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | head -3
  echo '```'
  echo
  echo "## Backend parity (cuda vs the CPU reference, same process)"
  echo
  echo '```'
  start=$(date +%s)
  timeout 300 "$BIN" --backend cuda parity --fixtures tests/fixtures/tiny 2>&1 | grep -v XDG_RUNTIME_DIR
  echo "exit ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s"
  echo '```'
  echo
  echo "## The demo on cuda (osft vs seqft)"
  echo
  echo '```'
  start=$(date +%s)
  timeout 300 "$BIN" --backend cuda demo --output "$OUT/demo-cuda" 2>&1 | grep -v -e XDG_RUNTIME_DIR -e 'INFO' | tail -12
  echo "exit ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s"
  echo '```'
} > "$REPORT" 2>&1
cat "$REPORT"
