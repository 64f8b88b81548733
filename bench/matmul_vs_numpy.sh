#!/usr/bin/env bash
# Our matmul (BLAS through FFI, wasm, plain TS) next to numpy on the same shapes, in one run that
# alternates numpy and ours shape by shape, then prints the ratio blas/numpy (target ≥ 80%).
#
#   bash bench/matmul_vs_numpy.sh            # PYTHON=/path/to/python3 to choose the interpreter
#
# Installs nothing. Needs a Python with numpy: on Debian `apt-get install -y python3-numpy` (it links
# the same libopenblas0-pthread that we load, which makes the comparison like for like).
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset for both sides of this run only: some machines set
# them to work around old OpenBLAS bugs, and they slow a current build down.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  local p
  for p in "${PYTHON:-}" /usr/bin/python3 python3 python; do
    [ -n "$p" ] || continue
    if command -v "$p" >/dev/null 2>&1 && "$p" -c "import numpy" >/dev/null 2>&1; then
      command -v "$p"
      return 0
    fi
  done
  return 1
}

if ! py="$(find_python)"; then
  echo "matmul_vs_numpy: no Python with numpy found (Debian: apt-get install -y python3-numpy," \
    "or set PYTHON=/path/to/python3)" >&2
  exit 1
fi
deno="$(command -v deno || true)"
[ -n "$deno" ] || { echo "matmul_vs_numpy: deno not found on PATH" >&2; exit 1; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | xargs)"
exec env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
  "$deno" run -A bench/matmul_report.ts --numpy "$py" "$@"
