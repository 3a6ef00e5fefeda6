# The two commands a newcomer needs: `make demo` and `make test`. Everything runs in .venv.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.imkd-setup-stamp
# `make test`: lint + the fast suite. The slow end-to-end checks (`-m slow`) run in
# `make test-slow`; CI runs both (`.ci/run`), `make test-all` runs everything at once.
PYTEST_ARGS ?=

.PHONY: setup test test-slow test-all lint demo clean

setup:
	@bash scripts/setup.sh

test: setup lint
	@bash scripts/run_pytest.sh -m "not slow" $(PYTEST_ARGS)

# The cross-distro test runs on its own (`make test-jazzy`, first in .ci/run): a failure
# there then names the distro bridge, not whatever ran before it in one pytest process.
test-slow: setup
	@bash scripts/run_pytest.sh -m slow --ignore=test/test_jazzy.py $(PYTEST_ARGS)

# The ROS 2 Jazzy venv of the cross-distro test, in ~/.cache/imkd_ros/venv-jazzy
# ($IMKD_JAZZY_VENV), and that test alone.
.PHONY: setup-jazzy test-jazzy
setup-jazzy:
	@ROS_DISTRO_WHEELS=jazzy bash scripts/setup.sh

test-jazzy: setup setup-jazzy
	@bash scripts/run_pytest.sh test/test_jazzy.py $(PYTEST_ARGS)

test-all: setup lint
	@bash scripts/run_pytest.sh $(PYTEST_ARGS)

# ruff, then the layer contracts of docs/ARCHITECTURE.md §Layers (.importlinter).
lint: setup
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/lint-imports --no-logo --no-cache .importlinter

# `make benchmark`: `imkd benchmark kd` into benchmark/ (hours on a 2-core CPU; it prints the
# projected time first). Resumable: run it again to continue, e.g. in the background:
# `nohup make benchmark > benchmark.log 2>&1 &`. BENCHMARK_ARGS: --set ..., --dry-run, --spec F.
BENCHMARK_ARGS ?=
.PHONY: benchmark
benchmark: setup
	@$(PY) -m imkd_core.cli benchmark kd --out benchmark $(BENCHMARK_ARGS)

# the investigation's extra variants (config/benchmark/investigate.yaml), into the same
# directory: the benchmark's world, teacher and finished runs are reused, only the extras train
.PHONY: benchmark-investigate
benchmark-investigate: setup
	@$(PY) -m imkd_core.cli benchmark kd --spec investigate --out benchmark $(BENCHMARK_ARGS)

# `make demo`: `python -m imkd_ros.demo` into demo/ (report: demo/report.md): a small world,
# its bags through `ros2 launch` with the shipped student, scored, against the offline
# evaluation. DEMO_ARGS: e.g. --checkpoint F, --scenes N. `make demo-train`: the same after
# training a teacher and then the student from scratch (DEMO_TRAIN_ARGS: --teacher-epochs N,
# --student-epochs N, --train-scenes N, ...).
DEMO_ARGS ?=
DEMO_TRAIN_ARGS ?=
.PHONY: demo-train
demo: setup
	@$(PY) -m imkd_ros.demo $(DEMO_ARGS)

demo-train: setup
	@$(PY) -m imkd_ros.demo --train $(DEMO_TRAIN_ARGS)

clean:
	rm -rf build install log .pytest_cache .ruff_cache
