"""Golden tests: what `rtd validate` prints on stderr for the common manifest mistakes.

Each case is a job.yaml with one mistake; the expected stderr is checked in as
tests/unit/golden/manifest-errors/<case>.txt. After an intended change to a message, run the case,
read the new text carefully (it is what users see), and update the file by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.errors import EXIT_INVALID_INPUT
from cli.main import main

GOLDEN = Path(__file__).parent / "golden" / "manifest-errors"

VALID = "name: adder\nowner_email: owner@example.com\nversion: 1.0.0\njobtype: python3:latest\n"

CASES = {
    # A misspelt key is unknown (with the field it probably meant), and the real one is then missing.
    "misspelt-key": VALID.replace("jobtype:", "jobtyp:"),
    # YAML reads 1.0 as a number: the message says so and suggests the semantic version.
    "version-number": VALID.replace("version: 1.0.0", "version: 1.0"),
    # The name becomes part of container and DNS names.
    "name-underscore": VALID.replace("name: adder", "name: My_Job"),
    "missing-jobtype": VALID.replace("jobtype: python3:latest\n", ""),
    # Several mistakes at once: every one is listed, unknown keys first, then field by field.
    "several-mistakes": (
        "name: My_Job\nownr_email: owner@example.com\nversion: 1.0\njobtype: python3\n"
        "runtime_env:\n  WORKERS: 4\nresources:\n  memory_max: 1GB\n"
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rtd_validate_prints_the_golden_errors(tmp_path: Path, case: str) -> None:
    (tmp_path / "job.yaml").write_text(CASES[case])

    # input="": stdin is not a TTY but empty, so rtd reads DIR/job.yaml.
    result = CliRunner().invoke(main, ["validate", str(tmp_path)], input="")

    assert result.exit_code == EXIT_INVALID_INPUT, result.output
    assert result.stdout == ""
    assert result.stderr == (GOLDEN / f"{case}.txt").read_text()


def test_every_golden_file_has_a_case() -> None:
    assert sorted(path.stem for path in GOLDEN.glob("*.txt")) == sorted(CASES)


def test_the_valid_base_of_the_cases_passes(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(VALID)

    result = CliRunner().invoke(main, ["validate", str(tmp_path)], input="")

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert result.stdout == VALID
