"""racetrackd's job wrapper for python3 jobs: serves a `JobEntrypoint` class over HTTP on port 7000.

Runs inside the job's container only (standard library plus gunicorn), never in the daemon.
"""
