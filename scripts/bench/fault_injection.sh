#!/usr/bin/env bash
# Fault injection at scale, for the figures in docs/reliability.md: the same tests as the
# suite with larger counts, then the fault classes of issue #25 run against the real `mtrec`
# command line (scripts/bench/fault_classes.py: concurrent exports, bad cells, planted
# symbolic links, a full disk, memory estimates, deep nesting).
# Usage: scripts/bench/fault_injection.sh [kills] [configs] [rows] [tries]
set -u
KILLS=${1:-10} CONFIGS=${2:-5000} ROWS=${3:-500} TRIES=${4:-2}
cd "$(dirname "$0")/../.."
export MTREC_KILLS=$KILLS MTREC_FUZZ_CONFIGS=$CONFIGS MTREC_FUZZ_ROWS=$ROWS
start=$(date +%s)
python -m pytest -q -p no:warnings -p no:cacheprovider \
    "tests/test_reliability.py::test_kill_9_at_random_steps_then_resume_to_exactly_num_steps" \
    "tests/test_config_fuzz.py" "tests/test_data_fuzz.py" 2>&1 | tail -5
status=${PIPESTATUS[0]}
echo "kills=$KILLS configs=$CONFIGS row_cases=$ROWS seconds=$(( $(date +%s) - start )) pytest_exit=$status"
start=$(date +%s)
python scripts/bench/fault_classes.py --tries "$TRIES"
classes=$?
echo "fault classes: tries=$TRIES seconds=$(( $(date +%s) - start )) exit=$classes (1: a try was not clear)"
[ "$status" -eq 0 ] && [ "$classes" -eq 0 ]
