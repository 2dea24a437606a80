"""Who may do what: scopes and grants (access), users, ESCs, tokens and grants in the registry
(accounts), token -> Identity (authenticator), password hashes, and secrets at rest (vault).

Below jobs/, deploy/, gateway/ and the HTTP edges; imports only the foundation modules.
"""
