#!/usr/bin/env bash
# The Python package's tests (python/tests/): makes the virtual environment
# they need from python/requirements-test.txt (NumPy, PyTorch,
# transformers, pytest from PyPI), builds the package into build/python/
# (configured by .ci/setup) and runs pytest with that environment's Python.
# Part of the README's test command; the C++ build and tools never need any
# of this.
#
# The environment lives in ~/.cache/moegen/ under a name that hashes the
# requirements, so it is made once per machine and requirements file, and a
# half-made one (no .complete marker) is made again.
#
# Environment: MOEGEN_PYTHON_ENV (the environment's directory),
# MOEGEN_BUILD_DIR (default build), PYTEST_ADDOPTS (extra pytest options).
set -euo pipefail
cd "$(dirname "$0")/../.."
requirements=python/requirements-test.txt
digest=$(sha256sum "$requirements" | cut -c1-12)
env_dir="${MOEGEN_PYTHON_ENV:-${XDG_CACHE_HOME:-$HOME/.cache}/moegen/python-env-$digest}"
build_dir="${MOEGEN_BUILD_DIR:-build}"

if [ ! -f "$env_dir/.complete" ]; then
  echo "run-python-tests: making the test environment in $env_dir"
  rm -rf "$env_dir"
  mkdir -p "$(dirname "$env_dir")"
  # Environments of older requirements (a few GB each) go.
  if [ -z "${MOEGEN_PYTHON_ENV:-}" ]; then
    for old in "$(dirname "$env_dir")"/python-env-*; do
      if [ "$old" != "$env_dir" ] && [ -d "$old" ]; then
        rm -rf "$old"
      fi
    done
  fi
  python3 -m venv "$env_dir"
  "$env_dir/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements"
  touch "$env_dir/.complete"
fi
python="$env_dir/bin/python"

# .ci/setup configures the build with the package (nanobind from PyPI) for
# the same python3 the environment was made from.
if ! grep -q '^MOEGEN_PYTHON:STRING=ON' "$build_dir/CMakeCache.txt" 2>/dev/null; then
  echo "run-python-tests: error: $build_dir is not configured with the Python package; run .ci/setup (it needs nanobind from PyPI)" >&2
  exit 1
fi
cmake --build "$build_dir" --target moegen-python

# The package without the compiler (python/runtime-only/), as a GPU machine
# builds it, with the same Python and nanobind: python/tests/
# test_runtime_only.py imports it. Only where the build found the CUDA
# runtime's headers (cuda.h), as the GPU machine has them.
runtime_only="$build_dir/python-runtime-only"
cache_value() { sed -n "s/^$1:[A-Z]*=//p" "$build_dir/CMakeCache.txt" | head -1; }
if [ "$(cache_value MOEGEN_HAVE_CUDA_RUNTIME)" = ON ]; then
  cmake -S python/runtime-only -B "$runtime_only" -G Ninja \
    -DPython_EXECUTABLE="$(cache_value Python_EXECUTABLE)" \
    -Dnanobind_DIR="$(cache_value nanobind_DIR)" > "$runtime_only.log" 2>&1 ||
    { cat "$runtime_only.log"; exit 1; }
  cmake --build "$runtime_only" >> "$runtime_only.log" 2>&1 ||
    { cat "$runtime_only.log"; exit 1; }
  export MOEGEN_RUNTIME_ONLY_DIR="$PWD/$runtime_only"
fi

# The templates and samples are found from the repository root.
PYTHONPATH="$PWD/$build_dir/python" MOEGEN_REPO="$PWD" MOEGEN_BIN="$PWD/$build_dir/bin" \
  "$python" -m pytest -q -p no:cacheprovider python/tests
