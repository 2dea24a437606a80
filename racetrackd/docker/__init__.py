"""The Docker adapter: the `Runtime` protocol and `DockerRuntime` (the only `import docker`), base
images, and the collection of a job's old images.

Imports only the foundation modules; the rest of racetrackd talks to `Runtime`.
"""
