"""Image recipes: render a job type's Dockerfile template and assemble the build context.

Pure of Docker: the runtime adapter (`racetrackd.docker.runtime`) turns a recipe into an image.
"""
