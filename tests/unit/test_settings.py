"""racetrackd.settings: RACETRACK_* variables (and the optional YAML file) into one Settings object."""

from __future__ import annotations

from pathlib import Path

import pytest

from racetrackd.errors import SettingsError
from racetrackd.settings import BUILTIN_PLUGINS_DIR, SETTINGS, Settings, plugin_setting_specs

REPO = Path(__file__).resolve().parents[2]


def test_defaults_from_an_empty_environment(tmp_path: Path) -> None:
    settings = Settings.from_env({"XDG_DATA_HOME": str(tmp_path / "xdg")})

    assert settings.host == "127.0.0.1"
    assert settings.port == 7102
    assert settings.data_dir == tmp_path / "xdg" / "racetrackd"
    assert settings.admin_token is None
    assert settings.auth_required is True
    assert settings.external_url is None
    assert settings.http_workers == 2
    assert settings.call_timeout == 600
    assert settings.async_max_attempts == 2
    assert settings.http_threads == 16
    assert settings.network == "racetrack"
    assert settings.job_addressing == "auto"
    assert settings.instance == "main"
    assert settings.plugin_setting("python_base_image") == "python:3.11-slim"  # declared by the python3 plugin
    assert settings.build_ca_bundle is None
    assert settings.build_pip_index_url is None
    assert settings.job_start_timeout == 180
    assert settings.worker_poll_interval == 0.2
    assert settings.log_level == "info"
    assert settings.config_file is None
    assert settings.database_path == tmp_path / "xdg" / "racetrackd" / "registry.sqlite3"


def test_values_are_parsed_from_the_environment(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")

    settings = Settings.from_env(
        {
            "RACETRACK_PORT": "8000",
            "RACETRACK_DATA_DIR": str(tmp_path),
            "RACETRACK_AUTH_REQUIRED": "off",
            "RACETRACK_ADMIN_TOKEN": "secret",
            "RACETRACK_INSTANCE": "Staging-2",
            "RACETRACK_BUILD_CA_BUNDLE": str(bundle),
            "RACETRACK_JOB_START_TIMEOUT": "2.5",
            "RACETRACK_LOG_LEVEL": "DEBUG",
        }
    )

    assert settings.port == 8000
    assert settings.data_dir == tmp_path
    assert settings.auth_required is False
    assert settings.admin_token == "secret"
    assert settings.instance == "staging-2"
    assert settings.build_ca_bundle == bundle
    assert settings.job_start_timeout == 2.5
    assert settings.log_level == "debug"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RACETRACK_PORT", "http"),
        ("RACETRACK_PORT", "70000"),
        ("RACETRACK_PORT", "-1"),
        ("RACETRACK_AUTH_REQUIRED", "maybe"),
        ("RACETRACK_HTTP_WORKERS", "0"),
        ("RACETRACK_HTTP_THREADS", "many"),
        ("RACETRACK_JOB_ADDRESSING", "dns"),
        ("RACETRACK_INSTANCE", "2nd"),
        ("RACETRACK_INSTANCE", "my_instance"),
        ("RACETRACK_INSTANCE", ""),
        ("RACETRACK_BUILD_CA_BUNDLE", "/nonexistent/ca-bundle.pem"),
        ("RACETRACK_JOB_START_TIMEOUT", "0"),
        ("RACETRACK_JOB_START_TIMEOUT", "-5"),
        ("RACETRACK_JOB_START_TIMEOUT", "nan"),
        ("RACETRACK_WORKER_POLL_INTERVAL", "soon"),
        ("RACETRACK_LOG_LEVEL", "verbose"),
    ],
)
def test_an_invalid_value_is_an_error_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})

    assert variable in caught.value.message
    assert repr(value) in caught.value.message


def test_an_unknown_racetrack_variable_is_rejected() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"RACETRACK_PROT": "8000"})

    assert "RACETRACK_PROT" in caught.value.message
    assert caught.value.hint is not None and "RACETRACK_PORT" in caught.value.hint


def test_variables_without_the_prefix_are_ignored(tmp_path: Path) -> None:
    settings = Settings.from_env({"PORT": "1", "RACETRACKD_PORT": "2", "RACETRACK_DATA_DIR": str(tmp_path)})

    assert settings.port == 7102


def test_config_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    config = tmp_path / "racetrackd.yaml"
    config.write_text("port: 9000\nnetwork: from-file\nauth_required: false\nexternal_url:\n")

    settings = Settings.from_env(
        {
            "RACETRACK_CONFIG_FILE": str(config),
            "RACETRACK_DATA_DIR": str(tmp_path),
            "RACETRACK_PORT": "9100",
        }
    )

    assert settings.port == 9100  # environment wins
    assert settings.network == "from-file"
    assert settings.auth_required is False  # a YAML boolean
    assert settings.external_url is None
    assert settings.config_file == str(config)


def test_config_file_with_an_unknown_key_is_rejected(tmp_path: Path) -> None:
    config = tmp_path / "racetrackd.yaml"
    config.write_text("prot: 9000\n")

    with pytest.raises(SettingsError, match="prot"):
        Settings.from_env({"RACETRACK_CONFIG_FILE": str(config)})


def test_config_file_with_an_invalid_value_names_the_variable(tmp_path: Path) -> None:
    config = tmp_path / "racetrackd.yaml"
    config.write_text("port: high\n")

    with pytest.raises(SettingsError, match="RACETRACK_PORT"):
        Settings.from_env({"RACETRACK_CONFIG_FILE": str(config)})


@pytest.mark.parametrize("content", ["- port\n- 9000\n", "port: [unclosed\n"])
def test_config_file_that_is_not_a_mapping_is_rejected(tmp_path: Path, content: str) -> None:
    config = tmp_path / "racetrackd.yaml"
    config.write_text(content)

    with pytest.raises(SettingsError, match="RACETRACK_CONFIG_FILE"):
        Settings.from_env({"RACETRACK_CONFIG_FILE": str(config)})


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="RACETRACK_CONFIG_FILE"):
        Settings.from_env({"RACETRACK_CONFIG_FILE": str(tmp_path / "absent.yaml")})


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "http://127.0.0.1:7102"),
        ({"RACETRACK_HOST": "0.0.0.0", "RACETRACK_PORT": "8080"}, "http://127.0.0.1:8080"),
        ({"RACETRACK_HOST": "racetrack.local"}, "http://racetrack.local:7102"),
        ({"RACETRACK_EXTERNAL_URL": "https://racetrack.example.com/"}, "https://racetrack.example.com"),
    ],
)
def test_public_url(tmp_path: Path, environ: dict[str, str], expected: str) -> None:
    settings = Settings.from_env({"RACETRACK_DATA_DIR": str(tmp_path), **environ})

    assert settings.public_url == expected


def test_as_environ_round_trips_through_from_env(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("pem")
    settings = Settings.from_env(
        {
            "RACETRACK_DATA_DIR": str(tmp_path / "data"),
            "RACETRACK_ADMIN_TOKEN": "secret",
            "RACETRACK_AUTH_REQUIRED": "no",
            "RACETRACK_PORT": "0",
            "RACETRACK_BUILD_CA_BUNDLE": str(bundle),
            "RACETRACK_JOB_START_TIMEOUT": "12.5",
            "RACETRACK_INSTANCE": "second",
        }
    )

    environ = settings.as_environ()

    assert set(environ) == {spec.env_name for spec in (*SETTINGS, *plugin_setting_specs([BUILTIN_PLUGINS_DIR]))}
    assert Settings.from_env(environ) == settings


def test_as_environ_of_defaults_round_trips(tmp_path: Path) -> None:
    settings = Settings.from_env({"RACETRACK_DATA_DIR": str(tmp_path)})

    assert Settings.from_env(settings.as_environ()) == settings


def test_every_setting_is_a_field_of_settings() -> None:
    assert [*(spec.field for spec in SETTINGS), "plugin_settings"] == list(Settings.__dataclass_fields__)
    assert all(spec.env_name.startswith("RACETRACK_") and spec.help for spec in SETTINGS)


def test_docs_settings_table_documents_every_setting() -> None:
    """Each setting has its own row in docs/settings.md's table (a mention elsewhere does not count),
    and the README links to that page."""
    rows = {
        line.split("|")[1].strip().strip("`")
        for line in (REPO / "docs" / "settings.md").read_text().splitlines()
        if line.startswith("| `RACETRACK_")
    }

    missing = [
        spec.env_name for spec in (*SETTINGS, *plugin_setting_specs([BUILTIN_PLUGINS_DIR])) if spec.env_name not in rows
    ]

    assert not missing, f"docs/settings.md's table does not document: {', '.join(missing)}"
    assert "](docs/settings.md)" in (REPO / "README.md").read_text()


# --- settings declared by plugins (`settings:` in plugin-manifest.yaml) ---------------------------------


def test_the_builtin_plugins_declare_the_base_images_of_their_job_types() -> None:
    declared = {spec.env_name: spec.default for spec in plugin_setting_specs([BUILTIN_PLUGINS_DIR])}

    assert declared == {
        "RACETRACK_PYTHON_BASE_IMAGE": "python:3.11-slim",
        "RACETRACK_GOLANG_BASE_IMAGE": "golang:1.21-bookworm",
        "RACETRACK_GOLANG_RUNTIME_IMAGE": "debian:bookworm-slim",
        "RACETRACK_RUST_BASE_IMAGE": "racetrackd/rust-base:bookworm",
        "RACETRACK_RUST_RUNTIME_IMAGE": "debian:bookworm-slim",
    }
    assert all(spec.help for spec in plugin_setting_specs([BUILTIN_PLUGINS_DIR]))


def test_a_plugin_declared_setting_is_read_from_its_variable_and_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "racetrackd.yaml"
    config.write_text("golang_runtime_image: debian:12\n")

    settings = Settings.from_env(
        {
            "RACETRACK_DATA_DIR": str(tmp_path),
            "RACETRACK_CONFIG_FILE": str(config),
            "RACETRACK_PYTHON_BASE_IMAGE": "racetrackd/python3-base:bookworm",
        }
    )

    assert settings.plugin_setting("python_base_image") == "racetrackd/python3-base:bookworm"
    assert settings.plugin_setting("golang_runtime_image") == "debian:12"
    assert settings.plugin_setting("golang_base_image") == "golang:1.21-bookworm"  # the declared default
    assert settings.plugin_setting("no_such_image") is None


def test_an_uploaded_plugin_declares_settings_the_same_way(tmp_path: Path) -> None:
    plugin = tmp_path / "plugins" / "shell-job-type-1.0.0"
    plugin.mkdir(parents=True)
    (plugin / "plugin-manifest.yaml").write_text(
        "name: shell-job-type\nversion: 1.0.0\ncategory: job-type\n"
        "settings:\n  shell_base_image: {default: 'debian:bookworm-slim', help: Base image of shell jobs.}\n"
    )

    default = Settings.from_env({"RACETRACK_DATA_DIR": str(tmp_path)})
    chosen = Settings.from_env({"RACETRACK_DATA_DIR": str(tmp_path), "RACETRACK_SHELL_BASE_IMAGE": "alpine:3"})

    assert default.plugin_setting("shell_base_image") == "debian:bookworm-slim"
    assert chosen.plugin_setting("shell_base_image") == "alpine:3"
    assert Settings.from_env(chosen.as_environ()) == chosen


def test_a_setting_no_installed_plugin_declares_is_still_an_unknown_setting(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="unknown setting RACETRACK_SHELL_BASE_IMAGE"):
        Settings.from_env({"RACETRACK_DATA_DIR": str(tmp_path), "RACETRACK_SHELL_BASE_IMAGE": "alpine:3"})
