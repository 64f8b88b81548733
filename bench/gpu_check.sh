#!/usr/bin/env bash
# WebGPU check on a GPU machine: the CPU↔WebGPU parity suite, the backend, train-step and float16
# tests, the kernel table (GFLOP/s, GB/s, dispatch/readback overhead), then the GPU report
# (bench/gpu_report.ts: adapter, matmul 1024–4096 against the fp32 peak, MiniMind2-Small and
# minimind3 train tokens/s at B 32 × T 512 with submits/syncs per step and MFU, decode tokens/s at
# batch 1/8/64, PyTorch CUDA fp32 eager on the same model and batch with our ratio; with
# shader-f16 also f16 matmuls and a float16 MiniMind2-Small step beside PyTorch's float16
# autocast). Budget: one 10-minute call.
#
#   bash bench/gpu_check.sh --tiny      # the software adapter, tiny sizes, no tests (CI runs it)
#
# Two steps, following the device tool's recipe (the GPU machine has no registry access, no
# Vulkan loader and no Deno):
#
#   bash bench/gpu_check.sh prepare     # here, once: Vulkan/EGL loader .debs and an xz'd deno
#                                       # binary into .gl/ (git-ignored; ~33 MB)
#   bash bench/gpu_check.sh             # there (device run with carry [".gl"]); also runs here
#                                       # on the software adapter, to check the script itself
#
# Set GPU_CHECK_OUT to a folder to also save the log and the table there (e.g. $OUT);
# GPU_CHECK_CARRIED_DENO=1 uses .gl/deno.xz even when a deno is on the PATH; DENO names the deno
# binary to use (default: the one on the PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[gpu_check] %s\n' "$*" >&2; }

if [ "${1:-}" = prepare ]; then
  grep -qxF '/.gl/' .git/info/exclude 2>/dev/null || echo /.gl/ >>.git/info/exclude
  mkdir -p .gl /tmp/amd64/partial
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  # shellcheck disable=SC2086
  apt-get $o update -qq
  # shellcheck disable=SC2086
  (cd .gl && apt-get $o download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
  deno_bin="$(readlink -f "$(command -v deno)")"
  if [ ! -f .gl/deno.xz ] || [ "$deno_bin" -nt .gl/deno.xz ]; then
    log "compressing $deno_bin ($(deno --version | head -n 1))"
    xz -T0 -6 -c "$deno_bin" >.gl/deno.xz
  fi
  du -sh .gl
  exit 0
fi

tiny=0
if [ "${1:-}" = --tiny ]; then tiny=1; fi
started=$(date +%s)
out="${GPU_CHECK_OUT:-$(mktemp -d)}"
mkdir -p "$out"

# --- Vulkan / EGL loaders (the image has the NVIDIA driver but no loader)
if ! ldconfig -p | grep -q 'libvulkan.so.1'; then
  if ls .gl/*.deb >/dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
  else
    log "no Vulkan loader and no .gl/*.deb: run 'bash bench/gpu_check.sh prepare' first"
  fi
fi
nv_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -f "$nv_icd" ] && [ -z "${VK_DRIVER_FILES:-}" ]; then
  export VK_DRIVER_FILES="$nv_icd"
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
export NO_COLOR=1

# --- Deno (carried xz'd when the machine has none)
DENO="${DENO:-$(command -v deno || true)}"
if [ -z "$DENO" ] || [ "${GPU_CHECK_CARRIED_DENO:-0}" = 1 ]; then
  if [ -f .gl/deno.xz ]; then
    xz -dc .gl/deno.xz >/tmp/deno && chmod +x /tmp/deno
    DENO=/tmp/deno
  else
    log "no deno and no .gl/deno.xz: run 'bash bench/gpu_check.sh prepare' first"
    exit 1
  fi
fi
export DENO_DIR="${DENO_DIR:-/tmp/deno_dir}"
log "$($DENO --version | head -n 1)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
  --format=csv,noheader | sed 's/^/[gpu_check] gpu: /' >&2 || true

# --- the parity suite and the backend / train-step tests (the adapter the tests find is printed
#     by the table below; on a GPU machine it must not be llvmpipe), the kernel table, the report
set +e
if [ "$tiny" = 1 ]; then
  echo "tests: skipped with --tiny (CI runs them in its own suite)" >"$out/gpu_check_tests.log"
  : >"$out/gpu_check_table.md"
  test_status=0 table_status=0
else
  timeout 200 "$DENO" test -A --cached-only tests/webgpu_parity_test.ts \
    tests/webgpu_backend_test.ts tests/webgpu_train_test.ts tests/webgpu_f16_test.ts \
    >"$out/gpu_check_tests.log" 2>&1
  test_status=$?
  timeout 100 "$DENO" run -A --cached-only bench/webgpu_table.ts --steps 5 \
    >"$out/gpu_check_table.md" 2>"$out/gpu_check_table.err"
  table_status=$?
fi
report_args=()
if [ "$tiny" = 1 ]; then report_args+=(--tiny 1); fi
timeout "$([ "$tiny" = 1 ] && echo 120 || echo 240)" "$DENO" run -A --cached-only \
  bench/gpu_report.ts "${report_args[@]}" >"$out/gpu_check_report.md" 2>"$out/gpu_check_report.err"
report_status=$?
set -e

summary="$(grep -E '^(ok|FAILED) \| [0-9]+ passed|^tests: skipped' "$out/gpu_check_tests.log" | tail -n 1 || true)"
failed_tests="$(grep -E '\.\.\. FAILED' "$out/gpu_check_tests.log" | sed 's/ \.\.\. FAILED.*//' || true)"
adapter="$(grep -m1 '^adapter:' "$out/gpu_check_table.md" || true)"
if [ -z "$adapter" ]; then
  adapter="adapter: $(grep -m1 '^| adapter ' "$out/gpu_check_report.md" | cut -d'|' -f3 | xargs || true)"
fi

echo
echo "## WebGPU check — ${adapter#adapter: }"
echo
echo "tests (parity, backend, train step, float16): ${summary:-no summary (exit $test_status)}"
if [ -n "$failed_tests" ]; then echo "failed: $(echo "$failed_tests" | paste -sd, -)"; fi
echo
if [ "$tiny" = 1 ]; then
  echo "kernel table: skipped with --tiny"
elif [ "$table_status" = 0 ]; then
  grep -v '^adapter:' "$out/gpu_check_table.md" || true
else
  echo "kernel table failed (exit $table_status):"
  tail -n 20 "$out/gpu_check_table.err"
fi
echo
if [ "$report_status" = 0 ]; then
  cat "$out/gpu_check_report.md"
else
  echo "GPU report failed (exit $report_status):"
  tail -n 20 "$out/gpu_check_report.err"
fi
echo
echo "total $(($(date +%s) - started)) s; logs in $out"
if [ "$test_status" != 0 ] || [ "$table_status" != 0 ] || [ "$report_status" != 0 ]; then exit 1; fi
