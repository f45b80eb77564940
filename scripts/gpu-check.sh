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
# cubecl-cuda compiles kernels at run time with NVRTC, loaded by name (libnvrtc.so, .so.13, …),
# and passes the toolkit's include folder to it: CUDA_PATH, else /usr/local/cuda, /opt/cuda or
# /usr (it panics when none exists; sculpt refuses to start then, naming what is missing). Point both at what this machine has, where they are not
# already found: the toolkit beside `nvcc`, and the NVRTC of the toolkit or of a CUDA wheel.
cuda_env() {
  if [[ -z "${CUDA_PATH:-}" && ! -d /usr/local/cuda && ! -d /opt/cuda ]] && command -v nvcc > /dev/null; then
    export CUDA_PATH="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
  fi
  if ! ldconfig -p 2>/dev/null | grep -q 'libnvrtc\.so'; then
    local d
    for d in "${CUDA_PATH:-/usr/local/cuda}"/lib64 "${CUDA_PATH:-/usr/local/cuda}"/targets/x86_64-linux/lib \
             $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, q, "lib") for p in nvidia.__path__ for q in os.listdir(p)))' 2>/dev/null); do
      if compgen -G "$d/libnvrtc.so*" > /dev/null; then export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; break; fi
    done
  fi
  # No toolkit folder at all: a CUDA wheel's (nvidia/cu13) include folder serves NVRTC as well.
  if [[ -z "${CUDA_PATH:-}" && ! -d /usr/local/cuda && ! -d /opt/cuda && ! -e /usr/bin/nvcc ]]; then
    local inc
    inc="$(python3 -c 'import nvidia, os; print(next(os.path.join(p, q) for p in nvidia.__path__ for q in sorted(os.listdir(p)) if os.path.exists(os.path.join(p, q, "include", "cuda_runtime.h"))))' 2>/dev/null)"
    [[ -n "$inc" ]] && export CUDA_PATH="$inc"
  fi
  echo "CUDA_PATH=${CUDA_PATH:-unset} (/usr/local/cuda: $([[ -d /usr/local/cuda ]] && echo present || echo absent)); nvcc: $(nvcc --version 2>/dev/null | tail -2 | head -1)"
  echo "NVRTC: $( (ldconfig -p 2>/dev/null | grep -o '/[^ ]*libnvrtc\.so[^ ]*' | head -1) || true) ${LD_LIBRARY_PATH:+(LD_LIBRARY_PATH=$LD_LIBRARY_PATH)}"
}
# (BACKEND is read again below; the --cl run is always on cuda.)
CUDA_ENV="$(mktemp)"
[[ "${BACKEND:-cuda}" == cuda ]] && cuda_env > "$CUDA_ENV"
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
    cat "$CUDA_ENV"
    sha256sum "$WORK/smollm2.gguf"
    start=$(date +%s)
    timeout 560 "$BIN" --backend cuda compare --methods osft,seqft,olora --config "$WORK/cl.toml" 2>&1 | grep -v -e XDG_RUNTIME_DIR -e 'INFO'
    echo "exit ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s"
    echo '```'
  } > "$REPORT" 2>&1
  cat "$REPORT"
  exit 0
fi
# The default run (no --cl): parity, the benches, the demo, then the 7B blocks with a bf16 W_high,
# with the high parts as factors and with the projections as burn matmuls, within one deadline so that the whole check fits one 10-minute call (what does not fit is
# skipped, last sections first). BACKEND=wgpu (or cpu) runs the same sections on a
# machine without an NVIDIA GPU (a dry run of this script; `cargo xtask ci` runs one); BENCH_7B
# and BENCH_SMOL override the two benches' arguments there.
BACKEND="${BACKEND:-cuda}"
DEADLINE=$(( $(date +%s) + ${CHECK_SECONDS:-540} ))
# `section SECONDS cmd…`: run with the smaller of SECONDS and what is left before the deadline.
section() {
  local want=$1; shift
  local left=$(( DEADLINE - $(date +%s) ))
  (( left < want )) && want=$left
  if (( want < 10 )); then echo "skipped: the check's deadline has passed"; return 0; fi
  local start=$(date +%s)
  timeout "$want" "$@" 2>&1 | grep -v -e XDG_RUNTIME_DIR -e ' INFO '
  local rc=${PIPESTATUS[0]}
  echo "exit $rc after $(( $(date +%s) - start )) s (limit $want s)"
}
# Peak device memory while the sections between `sample_start` and `sample_stop` run, sampled
# every 200 ms (NVIDIA only).
SAMPLER=""
SAMPLES="$(mktemp)"
sample_start() {
  command -v nvidia-smi > /dev/null || return 0
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$SAMPLES" 2>/dev/null &
  SAMPLER=$!
}
sample_stop() {
  [[ -n "$SAMPLER" ]] || return 0
  kill "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null; SAMPLER=""
  echo "peak device memory: $(sort -n "$SAMPLES" | tail -1) MiB (nvidia-smi, every 200 ms)"
}
trap '[[ -n "$SAMPLER" ]] && kill "$SAMPLER" 2>/dev/null' EXIT
# SmolLM2-135M's shapes (random weights), the CPU step bench's batch.
read -r -a SMOL <<< "${BENCH_SMOL:---hidden 576 --intermediate 1536 --heads 9 --kv-heads 3 --layers 30 --batch 4 --seq 128 --reps 3}"
# Two LLaMA-2-7B blocks (the README's worked example per block: unfreeze 0.25, batch 8 × 512,
# per-block checkpointing); multiply the per-block parts by 16 for the 32-block model.
read -r -a BIG <<< "${BENCH_7B:---hidden 4096 --intermediate 11008 --heads 32 --kv-heads 32 --layers 2 --batch 8 --seq 512 --reps 2 --unfreeze 0.25 --checkpoint}"
{
  echo "# sculpt GPU check ($BACKEND), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo '```'
  if command -v nvidia-smi > /dev/null; then nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | head -3; else echo "no nvidia-smi"; fi
  echo "CPU cores: $(nproc)"
  cat "$CUDA_ENV"
  echo '```'
  echo
  echo "## Backend parity ($BACKEND vs the CPU reference, same process)"
  echo
  echo '```'
  section 240 "$BIN" --backend "$BACKEND" parity --fixtures tests/fixtures/tiny
  echo '```'
  echo
  echo "## Bench: SmolLM2-135M shapes, $BACKEND (projections as cubecl kernels, then as burn matmuls), then the CPU backend on this machine's cores"
  echo
  echo '```'
  section 90 "$BIN" --backend "$BACKEND" bench "${SMOL[@]}"
  section 90 "$BIN" --backend "$BACKEND" bench "${SMOL[@]}" --tensor-projection
  section 120 "$BIN" --backend cpu bench "${SMOL[@]}"
  echo '```'
  echo
  echo "## Bench: two LLaMA-2-7B blocks on $BACKEND (${BIG[*]})"
  echo
  echo '```'
  sample_start
  section 200 "$BIN" --backend "$BACKEND" bench "${BIG[@]}"
  sample_stop
  echo '```'
  echo
  echo "## The demo on $BACKEND (osft vs seqft)"
  echo
  echo '```'
  section 120 "$BIN" --backend "$BACKEND" demo --output "$OUT/demo-$BACKEND" | tail -14
  echo '```'
  echo
  echo "## Bench: the same two 7B blocks with W_high stored in bf16 (--frozen-bf16)"
  echo
  echo '```'
  sample_start
  section 200 "$BIN" --backend "$BACKEND" bench "${BIG[@]}" --frozen-bf16
  sample_stop
  echo '```'
  echo
  echo "## Bench: the same two 7B blocks with the MLP's high parts held as factors (--frozen-factors)"
  echo
  echo '```'
  sample_start
  section 200 "$BIN" --backend "$BACKEND" bench "${BIG[@]}" --frozen-factors
  sample_stop
  echo '```'
  echo
  echo "## Bench: the two 7B blocks with the projections as burn matmuls (--tensor-projection)"
  echo
  echo '```'
  section 200 "$BIN" --backend "$BACKEND" bench "${BIG[@]}" --tensor-projection
  echo '```'
} > "$REPORT" 2>&1
cat "$REPORT"
