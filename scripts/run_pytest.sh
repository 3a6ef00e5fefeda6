#!/usr/bin/env bash
# Run pytest inside .venv. pytest exits 5 when it collects no test: that is a failure here, so a
# broken collection or an over-narrow marker can never pass CI by accident.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
.venv/bin/python -m pytest "$@"
rc=$?
if [[ $rc -eq 5 ]]; then
    echo "run_pytest: no tests were collected; treating that as a failure" >&2
    exit 1
fi
exit $rc
