"""Jobs that exist: reading, resolving and deleting them (queries), how daemon and jobs reach each
other (addressing), probes, waking a sleeping job, and the supervisor that keeps Docker and the
registry in step.

Knows nothing of deployments in progress: deploy/ builds on top of this package.
"""
