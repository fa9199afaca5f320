#!/usr/bin/env bash
# Fault injection at scale, for the figures in docs/reliability.md: the same tests as the
# suite with larger counts. Usage: scripts/bench/fault_injection.sh [kills] [configs] [rows]
set -u
KILLS=${1:-10} CONFIGS=${2:-5000} ROWS=${3:-500}
cd "$(dirname "$0")/../.."
export MTREC_KILLS=$KILLS MTREC_FUZZ_CONFIGS=$CONFIGS MTREC_FUZZ_ROWS=$ROWS
start=$(date +%s)
python -m pytest -q -p no:warnings -p no:cacheprovider \
    "tests/test_reliability.py::test_kill_9_at_random_steps_then_resume_to_exactly_num_steps" \
    "tests/test_config_fuzz.py" "tests/test_data_fuzz.py" 2>&1 | tail -5
status=${PIPESTATUS[0]}
echo "kills=$KILLS configs=$CONFIGS row_cases=$ROWS seconds=$(( $(date +%s) - start )) pytest_exit=$status"
