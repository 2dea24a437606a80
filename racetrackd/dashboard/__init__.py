"""The web dashboard at /dashboard: server-rendered pages for reading, small vanilla JS for actions.

Pages authenticate with the `X-Racetrack-Auth` cookie (a password login or a pasted token) and
check the same scopes as the API through the same helpers. Actions (call, delete, rollback,
tokens, grants, ...) are fetch() calls from the page to the JSON API with the session's CSRF
token; the dashboard's own forms (login, logout, deploy upload) carry it as a field.
"""

from racetrackd.dashboard.views import bp

__all__ = ["bp"]
