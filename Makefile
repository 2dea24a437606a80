# The habits: `make quickstart` (start racetrackd + deploy the sample), `make test`, `make check`.
.PHONY: quickstart test unit check stop bench

quickstart:
	scripts/quickstart.sh

test:
	scripts/run-tests.sh

unit:
	scripts/run-tests.sh tests/unit

check:
	.venv/bin/ruff check racetrackd builders cli jobmanifest pluginbundle jobtype_plugins templates tests bench
	.venv/bin/mypy

stop:
	.venv/bin/racetrackd stop
