#!/usr/bin/env bash
# The GPU check in one command (see benchmarks/gpu_check.py): `bash benchmarks/gpu_check.sh [--dry-run]`.
# PYTHON picks the interpreter (default: python on PATH, e.g. the activated .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" benchmarks/gpu_check.py "$@"
