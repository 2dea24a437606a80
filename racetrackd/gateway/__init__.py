"""The /pub gateway: the ASGI app, the routing table, the upstream pool to jobs, path mapping, and
durable async calls.

Runs on the HTTP workers' event loops: never imports deploy/ nor the Docker SDK.
"""
