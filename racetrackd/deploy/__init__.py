"""Deployments: requested by the API (requests), claimed by the worker, carried out by the deployer
(building the image, starting, switching over), rolled back (releases); a deployment's secrets.
"""
