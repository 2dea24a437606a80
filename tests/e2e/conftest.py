"""End-to-end fixtures: the integration tier's Docker client and base image serve here too."""

from tests.integration.conftest import base_image, docker_client  # noqa: F401 (fixtures)
