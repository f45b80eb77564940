#!/usr/bin/env bash
# Every GPU check in one call, for a machine with an NVIDIA driver but no Rust toolchain and no
# network: give it the CUDA binary that `cargo xtask gpu-bundle` built (target/gpu/sculpt.gz).
# Writes $OUT/gpu-report.md (or ./gpu-report.md) with the parity table's raw rows and timings.
#
#   bash scripts/gpu-check.sh target/gpu/sculpt.gz
#
# With --cl it runs the SmolLM2 continual-learning bench instead (configs/cpu/smollm2-cl4.toml on
# cuda, osft vs seqft vs olora), from the pieces `cargo xtask gpu-bundle --cl` writes to
# target/gpu/cl/ (the GGUF in parts, the four CL_Benchmark tasks as a tarball).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN_SRC="${1:?usage: scripts/gpu-check.sh <sculpt binary or .gz>}"
OUT="${OUT:-.}"
BIN="$(mktemp -d)/sculpt"
if [[ "$BIN_SRC" == *.gz ]]; then gunzip -c "$BIN_SRC" > "$BIN"; else cp "$BIN_SRC" "$BIN"; fi
chmod +x "$BIN"
REPORT="$OUT/gpu-report.md"
export SCULPT_LOG=warn
if [[ "${2:-}" == "--cl" ]]; then
  WORK="$(mktemp -d)"
  cat $(ls -d target/gpu/cl/part-* | sort -t- -k2 -n | sed 's|$|/smollm2.gguf.part|') > "$WORK/smollm2.gguf"
  mkdir -p "$WORK/data" && tar -xzf target/gpu/cl/data/cl-benchmark.tar.gz -C "$WORK/data"
  sed -e "s|^model = .*|model = \"$WORK/smollm2.gguf\"|" -e "s|^output = .*|output = \"$OUT/cl-cuda\"|" \
      -e "s|^data_root = .*|data_root = \"$WORK/data\"|" configs/cpu/smollm2-cl4.toml > "$WORK/cl.toml"
  REPORT="$OUT/gpu-cl-report.md"
  {
    echo "# sculpt SmolLM2 CL bench on cuda, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo '```'
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | head -3
    sha256sum "$WORK/smollm2.gguf"
    start=$(date +%s)
    timeout 560 "$BIN" --backend cuda compare --methods osft,seqft,olora --config "$WORK/cl.toml" 2>&1 | grep -v -e XDG_RUNTIME_DIR -e 'INFO'
    echo "exit ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s"
    echo '```'
  } > "$REPORT" 2>&1
  cat "$REPORT"
  exit 0
fi
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
