"""The job manifest (`job.yaml`), shared by the daemon and the `rtd` CLI.

Pure Python (PyYAML only): no Flask, no Docker, so the CLI can validate exactly as the daemon
does. Modules: `versions` (semver, aliases, wildcards), `quantities` (Kubernetes-style
resource sizes), `schema` (fields, validation, the frozen `Manifest`), `loading` (files,
`extends` overlays, `-e` overrides).
"""

from jobmanifest.schema import FieldError, Manifest, ManifestInvalid, Resources, validate_manifest

__all__ = ["FieldError", "Manifest", "ManifestInvalid", "Resources", "validate_manifest"]
