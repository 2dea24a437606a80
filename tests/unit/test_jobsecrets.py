"""A job's secrets (racetrackd/deploy/jobsecrets.py): validation, inheritance between deployments, the build's
secrets URL, redaction; and rtd's side of them (cli/secrets.py, cli/packing.py)."""

from __future__ import annotations

import base64
import io
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cli.deploying import _secret_files
from cli.packing import pack
from cli.secrets import SecretFileError, parse_env_file, read_secret_vars
from jobmanifest import Manifest, validate_manifest
from racetrackd import db
from racetrackd.auth.vault import Vault
from racetrackd.db import Deployment, DeploymentStatus, open_database
from racetrackd.deploy import jobsecrets
from racetrackd.deploy.jobsecrets import (
    BUILD_PHASE,
    JobSecrets,
    Redactor,
    Requester,
    build_env_for_build,
    build_secrets_digest,
)
from racetrackd.errors import NotFoundError, ValidationError
from tests.unit.fakes import build_context, sample_manifest, write_job
from tests.unit.gateway_helpers import add_job

API = "/lifecycle/api/v1"
BUILD_SECRET = "build-secret-value"
RUNTIME_SECRET = "runtime-secret-value"


@pytest.fixture
def vault() -> Vault:
    return Vault(b"unit-test-secret-key")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "data" / "registry.sqlite3"
    open_database(path)
    yield path
    if not db.database.is_closed():
        db.database.close()


def manifest(**overrides: Any) -> Manifest:
    return validate_manifest(sample_manifest(**{"version": "1.0.0", **overrides}))


REMOTE = "https://git.example.com/team/adder"
OWNER = Requester(subject="user:alice", git_remote=None)


def deployment(
    vault: Vault,
    secrets: JobSecrets,
    *,
    version: str = "1.0.0",
    status: str = DeploymentStatus.IN_PROGRESS,
    phase: str | None = BUILD_PHASE,
    create_time: float | None = None,
    requested_by: str | None = OWNER.subject,
) -> Deployment:
    row = Deployment.create(
        job_name="adder",
        job_version=version,
        manifest_yaml="",
        status=status,
        phase=phase,
        secrets=jobsecrets.seal(secrets, vault),
        requested_by=requested_by,
    )
    if create_time is not None:
        Deployment.update(create_time=create_time).where(Deployment.id == row.id).execute()
    return row


# --- secret_vars of a deploy request ------------------------------------------------------------------


def test_secret_vars_parse_into_build_and_runtime_env() -> None:
    parsed = jobsecrets.parse_secret_vars({"build_env": {"PIP_TOKEN": "p1"}, "runtime_env": {"API_KEY": "k1"}})

    assert parsed == ({"PIP_TOKEN": "p1"}, {"API_KEY": "k1"})


def test_missing_secret_vars_mean_none_sent_and_missing_parts_are_empty() -> None:
    assert jobsecrets.parse_secret_vars(None) is None
    assert jobsecrets.parse_secret_vars({}) == ({}, {})
    assert jobsecrets.parse_secret_vars({"runtime_env": {"A": "1"}}) == ({}, {"A": "1"})
    assert jobsecrets.parse_secret_vars({"build_env": None, "runtime_env": None}) == ({}, {})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("A=1", 'secret_vars: must be {"build_env": {NAME: value}, "runtime_env": {NAME: value}} or null'),
        (["A"], 'secret_vars: must be {"build_env"'),
        ({"env": {"A": "1"}}, 'secret_vars: must be {"build_env"'),
        ({"build_env": ["A=1"]}, "secret_vars.build_env: must be a mapping of NAME to value"),
        ({"runtime_env": "A=1"}, "secret_vars.runtime_env: must be a mapping of NAME to value"),
        ({"runtime_env": {"1ABC": "x"}}, "secret_vars.runtime_env: '1ABC' is not a valid environment variable name"),
        ({"build_env": {"MY-VAR": "x"}}, "secret_vars.build_env: 'MY-VAR' is not a valid environment variable name"),
        ({"runtime_env": {"NUMBER": 5}}, "secret_vars.runtime_env.NUMBER: must be a string"),
        ({"build_env": {"FLAG": None}}, "secret_vars.build_env.FLAG: must be a string"),
    ],
)
def test_invalid_secret_vars_are_refused_naming_the_field(value: Any, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        jobsecrets.parse_secret_vars(value)

    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("name", ["AUTH_TOKEN", "JOB_NAME", "PUB_URL", "PYTHONPATH", "JOB_CALL_TIMEOUT"])
@pytest.mark.parametrize("part", ["build_env", "runtime_env"])
def test_reserved_names_are_refused_without_echoing_the_value(name: str, part: str) -> None:
    with pytest.raises(ValidationError) as caught:
        jobsecrets.parse_secret_vars({part: {name: "s3cr3t-value"}})

    assert str(caught.value) == f"secret_vars.{part}.{name}: reserved: racetrackd sets it in every job"
    assert "s3cr3t-value" not in str(caught.value)


# --- redaction ---------------------------------------------------------------------------------------


def test_the_redactor_masks_every_secret_of_four_or_more_characters() -> None:
    redact = Redactor(["hunter22", "abcd", "xyz", ""])

    assert redact("login hunter22 ok; abcd; xyz; hunter22") == "login *** ok; ***; xyz; ***"


def test_the_redactor_leaves_text_alone_without_secrets() -> None:
    assert Redactor([])("nothing hunter22 here") == "nothing hunter22 here"
    assert Redactor(["abc", "x"])("abc x abc") == "abc x abc"


def test_the_longest_secret_wins_where_one_contains_another() -> None:
    redact = Redactor(["abcd", "abcdefgh"])

    assert redact("abcdefgh abcd") == "*** ***"


def test_secrets_with_regex_characters_are_matched_literally() -> None:
    redact = Redactor(["a.b*c+", "(x|y)"])

    assert redact("a.b*c+ aXbbc+ (x|y) x") == "*** aXbbc+ *** x"


def test_job_secrets_list_every_value_to_redact() -> None:
    secrets = JobSecrets(
        build_env={"B": "bbbb"}, runtime_env={"R": "rrrr"}, git_credentials={"username": "me", "password": "pppp"}
    )

    assert sorted(secrets.values()) == ["bbbb", "pppp", "rrrr"]
    assert JobSecrets().is_empty() and not secrets.is_empty()


def test_redacted_lines_find_a_secret_split_across_chunks() -> None:
    redact = Redactor(["secret-value"])

    lines = list(redact.lines([b"start secr", b"et-val", b"ue end\nnext secret-", b"value\ntail"]))

    assert lines == ["start *** end\n", "next ***\n", "tail"]
    assert "secret" not in "".join(lines)


def test_a_multi_line_secret_is_masked_even_when_its_lines_come_in_separate_chunks() -> None:
    key = "-----BEGIN KEY-----\nMIIBVgIBADANBgkqhkiG9w0BAQEFAASCAUAw\nggE8AgEAAkEAq7BFUpkGp3+XQ\n-----END KEY-----"
    redact = Redactor([key, "ab\ncd"])

    lines = "".join(
        redact.lines(
            [
                b"key: -----BEGIN KEY-----\nMIIBVgIBADANBgkq",
                b"hkiG9w0BAQEFAASCAUAw\n",
                b"ggE8AgEAAkEAq7BFUpkGp3+XQ\n-----END KEY-----\n",
            ]
        )
    )

    assert "MIIBVgIBADANBgkqhkiG9w0BAQEFAASCAUAw" not in lines and "ggE8AgEAAkEAq7BFUpkGp3+XQ" not in lines
    assert redact(key) == "***"
    assert redact("ab and cd") == "ab and cd"  # lines under four characters stay, as short values do


def test_redacted_lines_come_out_whole_lines_at_a_time() -> None:
    redact = Redactor(["zzzz"])

    assert list(redact.lines([b"a\nb", b"\nc\n", b"", b"d"])) == ["a\n", "b\nc\n", "d"]
    assert list(redact.lines([])) == []


def test_redacted_lines_find_a_non_ascii_secret_split_inside_a_character() -> None:
    redact = Redactor(["pässwörd"])
    data = "login pässwörd ok\n".encode()
    split = data.index("ä".encode()) + 1  # between the two bytes of ä

    lines = list(redact.lines([data[:split], data[split:]]))

    assert lines == ["login *** ok\n"]


# --- the build's secrets URL ---------------------------------------------------------------------------


def test_a_build_in_progress_gets_its_build_env_with_the_right_digest(registry: Path, vault: Vault) -> None:
    env = {"PIP_TOKEN": BUILD_SECRET}
    deployment(vault, JobSecrets(build_env=env, runtime_env={"API_KEY": RUNTIME_SECRET}))
    digest = build_secrets_digest(vault, "adder", "1.0.0", env)

    assert build_env_for_build("adder", "1.0.0", digest, vault) == env


def test_the_digest_is_the_daemons_own_and_follows_the_secrets(vault: Vault) -> None:
    env = {"PIP_TOKEN": BUILD_SECRET}
    digest = build_secrets_digest(vault, "adder", "1.0.0", env)

    assert digest == build_secrets_digest(vault, "adder", "1.0.0", dict(env))  # stable: the layer cache works
    assert len(digest) == 40 and BUILD_SECRET not in digest
    assert digest != build_secrets_digest(Vault(b"another key"), "adder", "1.0.0", env)
    assert digest != build_secrets_digest(vault, "adder", "1.0.1", env)
    assert digest != build_secrets_digest(vault, "adder", "1.0.0", {"PIP_TOKEN": "changed"})


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        (DeploymentStatus.IN_PROGRESS, "queued"),
        (DeploymentStatus.IN_PROGRESS, "fetching the source code"),
        (DeploymentStatus.IN_PROGRESS, "starting Job server"),
        (DeploymentStatus.DONE, BUILD_PHASE),
        (DeploymentStatus.FAILED, BUILD_PHASE),
    ],
)
def test_no_build_env_outside_the_build_phase_of_a_running_deployment(
    registry: Path, vault: Vault, status: str, phase: str
) -> None:
    env = {"PIP_TOKEN": BUILD_SECRET}
    deployment(vault, JobSecrets(build_env=env), status=status, phase=phase)
    digest = build_secrets_digest(vault, "adder", "1.0.0", env)

    with pytest.raises(NotFoundError, match="no build is waiting for these secrets"):
        build_env_for_build("adder", "1.0.0", digest, vault)


@pytest.mark.parametrize(
    ("name", "version", "digest"),
    [
        ("adder", "1.0.0", "0" * 40),
        ("adder", "1.0.0", ""),
        ("adder", "2.0.0", None),
        ("other", "1.0.0", None),
    ],
)
def test_a_wrong_digest_or_job_is_the_same_404(
    registry: Path, vault: Vault, name: str, version: str, digest: str | None
) -> None:
    env = {"PIP_TOKEN": BUILD_SECRET}
    deployment(vault, JobSecrets(build_env=env))
    right = build_secrets_digest(vault, "adder", "1.0.0", env)

    with pytest.raises(NotFoundError, match="no build is waiting for these secrets"):
        build_env_for_build(name, version, right if digest is None else digest, vault)


def test_a_build_without_build_secrets_gets_nothing(registry: Path, vault: Vault) -> None:
    deployment(vault, JobSecrets(runtime_env={"API_KEY": RUNTIME_SECRET}))

    with pytest.raises(NotFoundError):
        build_env_for_build("adder", "1.0.0", build_secrets_digest(vault, "adder", "1.0.0", {}), vault)


def test_the_build_secrets_url_is_open_and_answers_only_the_running_build(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    svc_vault: Vault = app.extensions["racetrackd"].vault
    env = {"PIP_TOKEN": BUILD_SECRET}
    row = deployment(svc_vault, JobSecrets(build_env=env))
    digest = build_secrets_digest(svc_vault, "adder", "1.0.0", env)
    anyone = app.test_client()  # the build has no token

    assert anyone.get(f"{API}/build-secrets/adder/1.0.0/{digest}").get_json() == {"env": env}
    wrong = anyone.get(f"{API}/build-secrets/adder/1.0.0/{'f' * 40}")
    assert wrong.status_code == 404 and wrong.get_json()["type"] == "not-found"
    assert BUILD_SECRET not in wrong.get_data(as_text=True)

    row.finish(DeploymentStatus.DONE)

    gone = anyone.get(f"{API}/build-secrets/adder/1.0.0/{digest}")
    assert gone.status_code == 404 and BUILD_SECRET not in gone.get_data(as_text=True)


# --- which secrets a deployment runs with -------------------------------------------------------------


def test_secrets_sent_with_a_deploy_are_used(registry: Path, vault: Vault) -> None:
    deployment(vault, JobSecrets(runtime_env={"API_KEY": "old-value"}), status=DeploymentStatus.DONE)

    secrets = jobsecrets.for_deployment(manifest(), ({"B": "build"}, {"API_KEY": "new-value"}), None, vault, OWNER)

    assert (secrets.build_env, secrets.runtime_env) == ({"B": "build"}, {"API_KEY": "new-value"})


def test_a_deploy_without_secrets_inherits_the_last_ones_of_that_version(registry: Path, vault: Vault) -> None:
    deployment(vault, JobSecrets(runtime_env={"API_KEY": "first"}), status=DeploymentStatus.DONE, create_time=1_000)
    deployment(
        vault,
        JobSecrets(build_env={"B": "bbbb"}, runtime_env={"API_KEY": "second"}),
        status=DeploymentStatus.DONE,
        create_time=2_000,
    )
    deployment(
        vault,
        JobSecrets(runtime_env={"API_KEY": "other version"}),
        version="2.0.0",
        status=DeploymentStatus.DONE,
        create_time=3_000,
    )

    secrets = jobsecrets.for_deployment(manifest(secret_runtime_env_file="secrets.env"), None, None, vault, OWNER)

    assert (secrets.build_env, secrets.runtime_env) == ({"B": "bbbb"}, {"API_KEY": "second"})


def test_a_new_version_inherits_nothing_from_another(registry: Path, vault: Vault) -> None:
    deployment(vault, JobSecrets(runtime_env={"API_KEY": "v1"}), status=DeploymentStatus.DONE)

    secrets = jobsecrets.for_deployment(manifest(version="2.0.0"), None, None, vault, OWNER)

    assert (secrets.build_env, secrets.runtime_env, secrets.git_credentials) == ({}, {}, None)


@pytest.mark.parametrize(
    ("field", "file"), [("secret_runtime_env_file", "secrets.env"), ("secret_build_env_file", "build-secrets.env")]
)
def test_a_manifest_naming_a_secret_file_needs_secrets_sent_or_stored(
    registry: Path, vault: Vault, field: str, file: str
) -> None:
    deployment(vault, JobSecrets(runtime_env={"API_KEY": "v1"}), version="0.9.0", status=DeploymentStatus.DONE)

    with pytest.raises(ValidationError) as caught:
        jobsecrets.for_deployment(manifest(**{field: file}), None, None, vault, OWNER)

    assert str(caught.value).startswith(f"{field}: job.yaml names {file}, but the deploy carried no secrets")
    assert "adder 1.0.0" in str(caught.value)
    assert caught.value.hint is not None and "rtd submit" in caught.value.hint


def test_git_credentials_are_inherited_unless_new_ones_are_sent(registry: Path, vault: Vault) -> None:
    creds = {"username": "me", "password": "git-pass"}
    deployment(vault, JobSecrets(git_credentials=creds, credentials_remote=REMOTE), status=DeploymentStatus.DONE)
    from_git = Requester(subject="user:alice", git_remote=REMOTE)

    assert jobsecrets.for_deployment(manifest(), ({}, {}), None, vault, from_git).git_credentials == creds
    fresh = {"username": "me", "password": "rotated"}
    assert jobsecrets.for_deployment(manifest(), None, fresh, vault, from_git).git_credentials == fresh


def test_secrets_are_sealed_at_rest_and_read_back(registry: Path, vault: Vault) -> None:
    secrets = JobSecrets(build_env={"B": BUILD_SECRET}, runtime_env={"R": RUNTIME_SECRET})
    row = deployment(vault, secrets)

    assert BUILD_SECRET not in (row.secrets or "") and RUNTIME_SECRET not in (row.secrets or "")
    assert jobsecrets.of_deployment(Deployment.get_by_id(row.id), vault) == secrets
    assert jobsecrets.seal(JobSecrets(), vault) is None


# --- through the API ----------------------------------------------------------------------------------


def test_secret_vars_sent_with_a_deploy_are_sealed_and_never_shown(client: FlaskClient, tmp_path: Path) -> None:
    response = client.post(
        f"{API}/deploy",
        json={
            "manifest": sample_manifest(secret_runtime_env_file="secrets.env"),
            "build_context": build_context(),
            "secret_vars": {"build_env": {"PIP_TOKEN": BUILD_SECRET}, "runtime_env": {"API_KEY": RUNTIME_SECRET}},
        },
    )

    assert response.status_code == 201
    shown = client.get(f"{API}/deploy/{response.get_json()['id']}").get_data(as_text=True)
    assert BUILD_SECRET not in shown and RUNTIME_SECRET not in shown
    on_disk = b"".join(path.read_bytes() for path in (tmp_path / "data").glob("registry.sqlite3*"))
    assert b"PIP_TOKEN" not in on_disk  # not even the names: the whole set is sealed
    assert BUILD_SECRET.encode() not in on_disk and RUNTIME_SECRET.encode() not in on_disk


def test_a_deploy_with_a_reserved_secret_name_is_400_and_stores_nothing(client: FlaskClient) -> None:
    response = client.post(
        f"{API}/deploy",
        json={
            "manifest": sample_manifest(),
            "build_context": build_context(),
            "secret_vars": {"runtime_env": {"AUTH_TOKEN": RUNTIME_SECRET}},
        },
    )

    assert response.status_code == 400
    assert response.get_json()["error"].startswith("secret_vars.runtime_env.AUTH_TOKEN: reserved")
    assert RUNTIME_SECRET not in response.get_data(as_text=True)
    assert Deployment.select().count() == 0


def test_a_deploy_naming_a_secret_file_without_secrets_is_400_naming_the_field(client: FlaskClient) -> None:
    response = client.post(
        f"{API}/deploy",
        json={"manifest": sample_manifest(secret_runtime_env_file="secrets.env"), "build_context": build_context()},
    )

    assert response.status_code == 400
    assert response.get_json()["error"].startswith("secret_runtime_env_file: ")
    assert Deployment.select().count() == 0


def test_job_logs_are_shown_with_the_jobs_secrets_masked(client: FlaskClient, app: Flask, runtime: Any) -> None:
    job = add_job("adder", "1.0.0")
    svc_vault: Vault = app.extensions["racetrackd"].vault
    row = deployment(svc_vault, JobSecrets(runtime_env={"API_KEY": RUNTIME_SECRET}), status=DeploymentStatus.DONE)
    Deployment.update(image_name=job.image_name).where(Deployment.id == row.id).execute()
    runtime.logs[job.container_name] = f"starting\nusing key {RUNTIME_SECRET}\nready"

    logs = client.get(f"{API}/job/adder/1.0.0/logs?tail=10").get_json()["logs"]
    plain = client.get(f"{API}/job/adder/1.0.0/logs/plain?tail=10").get_data(as_text=True)
    followed = client.get(f"{API}/job/adder/1.0.0/logs?tail=10&follow=true").get_data(as_text=True)

    for text in (logs, plain, followed):
        assert "using key ***" in text and RUNTIME_SECRET not in text


# --- rtd: the secret env files ------------------------------------------------------------------------


def test_parse_env_file_reads_names_and_values() -> None:
    text = "\n".join(
        [
            "# a comment",
            "",
            "PLAIN=value",
            "  SPACED = padded  ",
            "export EXPORTED=yes",
            'DOUBLE="quoted value"',
            "SINGLE='single # not a comment'",
            "MIXED=\"not closed'",
            "EQUALS=a=b=c",
            "EMPTY=",
            'QUOTES=""',
            "PLAIN=second wins",
        ]
    )

    assert parse_env_file(text, "secrets.env") == {
        "PLAIN": "second wins",
        "SPACED": "padded",
        "EXPORTED": "yes",
        "DOUBLE": "quoted value",
        "SINGLE": "single # not a comment",
        "MIXED": "\"not closed'",
        "EQUALS": "a=b=c",
        "EMPTY": "",
        "QUOTES": "",
    }


@pytest.mark.parametrize(
    ("line", "number"),
    [
        ("this-line-is-a-secret-token", 2),
        ("1BAD=value-that-is-secret", 2),
        ("BAD NAME=value-that-is-secret", 2),
        ("=value-that-is-secret", 2),
    ],
)
def test_a_bad_line_names_the_file_and_line_but_not_its_text(line: str, number: int) -> None:
    with pytest.raises(SecretFileError) as caught:
        parse_env_file(f"GOOD=1\n{line}\nALSO=2\n", "secret_runtime_env_file ./secrets.env")

    assert str(caught.value) == f"secret_runtime_env_file ./secrets.env:{number}: expected NAME=value"
    assert line not in str(caught.value)


def test_read_secret_vars_reads_the_files_the_manifest_names(tmp_path: Path) -> None:
    write_job(tmp_path, {"build.env": "PIP_TOKEN=p\n", "conf/runtime.env": "API_KEY=k\n"})
    named = manifest(secret_build_env_file="build.env", secret_runtime_env_file="conf/runtime.env")

    assert read_secret_vars(named, tmp_path) == ({"build_env": {"PIP_TOKEN": "p"}, "runtime_env": {"API_KEY": "k"}}, [])
    assert read_secret_vars(manifest(), tmp_path) == ({"build_env": {}, "runtime_env": {}}, [])


def test_read_secret_vars_sends_none_when_a_named_file_is_missing(tmp_path: Path) -> None:
    write_job(tmp_path, {"build.env": "PIP_TOKEN=p\n"})
    named = manifest(secret_build_env_file="build.env", secret_runtime_env_file="runtime.env")

    secret_vars, warnings = read_secret_vars(named, tmp_path)

    assert secret_vars is None
    assert warnings[0] == f"secret_runtime_env_file: {tmp_path / 'runtime.env'} not found"
    assert "reuses those of this version's last deployment" in warnings[-1]


# --- rtd: the build context leaves the secret files out ----------------------------------------------------


def packed_names(encoded: str) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(encoded)), mode="r:gz") as tar:
        return set(tar.getnames())


def test_pack_leaves_out_the_excluded_secret_files(tmp_path: Path) -> None:
    write_job(
        tmp_path,
        {
            "entrypoint.py": "x = 1\n",
            "secrets.env": "API_KEY=k\n",
            "conf/build.env": "T=t\n",
            "conf/settings.yaml": "a: 1\n",
            "other/secrets.env": "kept: not named\n",
        },
    )

    names = packed_names(pack(tmp_path, frozenset({"secrets.env", "conf/build.env"})))

    assert names == {"entrypoint.py", "conf/settings.yaml", "other/secrets.env"}


def test_rtd_excludes_the_files_the_manifest_names(tmp_path: Path) -> None:
    write_job(tmp_path, {"entrypoint.py": "x = 1\n", "secrets.env": "API_KEY=k\n", "conf/build.env": "T=t\n"})
    named = manifest(secret_runtime_env_file="./secrets.env", secret_build_env_file="conf/build.env")

    names = packed_names(pack(tmp_path, _secret_files(named)))

    assert names == {"entrypoint.py"}


def test_rtd_excludes_a_secret_file_named_through_a_parent_segment(tmp_path: Path) -> None:
    write_job(tmp_path, {"entrypoint.py": "x = 1\n", "secrets.env": "API_KEY=k\n", "conf/app.yaml": "a: 1\n"})
    named = manifest(secret_runtime_env_file="conf/../secrets.env")

    names = packed_names(pack(tmp_path, _secret_files(named)))

    assert "secrets.env" not in names
