# The habits: `make quickstart` (start racetrackd + deploy the sample), `make test`, `make check`.
.PHONY: quickstart test test-swarm unit check format stop bench

quickstart:
	scripts/quickstart.sh $(if $(WITH_GOLANG),--with-golang) $(if $(WITH_RUST),--with-rust)

test:
	scripts/run-tests.sh

unit:
	scripts/run-tests.sh tests/unit

# The 3-node swarm tier (opt-in; it makes and removes the lab itself: scripts/swarm-lab.sh).
test-swarm:
	scripts/run-tests.sh -m swarm_cluster tests/e2e

PY_DIRS = racetrackd builders cli jobmanifest pluginbundle jobtype_plugins templates tests bench

check:
	.venv/bin/ruff format --check $(PY_DIRS)
	.venv/bin/ruff check $(PY_DIRS)
	.venv/bin/mypy

format:
	.venv/bin/ruff format $(PY_DIRS)

stop:
	.venv/bin/racetrackd stop
