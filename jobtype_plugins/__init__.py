"""The built-in job-type plugins (python3, golang, docker-proxy, dockerfile), shipped as package data.

A package only so that the wheel carries each plugin's files (manifest, Dockerfile template,
wrapper sources, Go tools) and `importlib.resources` finds them the same way in a source checkout,
the racetrackd image and an installed wheel; look them up through racetrackd.resources. The plugin
folders themselves are not Python packages: their files are copied into job images.
"""

# racetrackd.resources checks this (see templates/__init__.py).
OWNER = "racetrackd"
