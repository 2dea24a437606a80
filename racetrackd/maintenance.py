"""Maintenance mode: an admin's switch, kept in the registry, that refuses new deployments,
rollbacks and deletions (503) while the host is being looked after. As in Racetrack (2.33), the
gateway also answers job calls 503 meanwhile, unless RACETRACK_MAINTENANCE_BLOCKS_CALLS=false keeps
jobs serving (`refuse_job_calls`, checked by the gateway against its in-memory copy of the state)."""

from __future__ import annotations

import dataclasses
import json

from racetrackd.db import RegistrySetting, now
from racetrackd.errors import MaintenanceMode, ValidationError

SETTING_KEY = "maintenance_mode"
MAX_MESSAGE_LENGTH = 500


@dataclasses.dataclass(frozen=True)
class Maintenance:
    on: bool
    message: str = ""
    changed_by: str | None = None
    since: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "maintenance_mode": self.on,
            "message": self.message,
            "changed_by": self.changed_by,
            "since": int(self.since) if self.since else None,
        }


def current() -> Maintenance:
    row = RegistrySetting.get_or_none(RegistrySetting.key == SETTING_KEY)
    if row is None:
        return Maintenance(on=False)
    value = json.loads(row.value)
    return Maintenance(
        on=bool(value.get("on")), message=value.get("message", ""), changed_by=row.changed_by, since=row.update_time
    )


def switch(on: object, message: object, changed_by: str | None) -> Maintenance:
    """Turn maintenance mode on or off, with a message for the people it turns away."""
    if not isinstance(on, bool):
        raise ValidationError("maintenance_mode: must be true or false")
    if message is None:
        message = ""
    if not isinstance(message, str) or len(message) > MAX_MESSAGE_LENGTH:
        raise ValidationError(f"message: must be a string of at most {MAX_MESSAGE_LENGTH} characters")
    (
        RegistrySetting.insert(
            key=SETTING_KEY, value=json.dumps({"on": on, "message": message}), changed_by=changed_by, update_time=now()
        )
        .on_conflict_replace()
        .execute()
    )
    return current()


def ensure_changes_allowed(doing: str) -> None:
    """Raise MaintenanceMode (503) while maintenance mode is on."""
    state = current()
    if state.on:
        reason = f": {state.message}" if state.message else ""
        raise MaintenanceMode(
            f"racetrackd is in maintenance mode; cannot {doing} now{reason}",
            hint="try again when an admin turns maintenance mode off",
        )


def refuse_job_calls(state: Maintenance) -> None:
    """Raise MaintenanceMode (503) for a job call while `state` is on (the gateway's cached copy)."""
    if state.on:
        reason = f": {state.message}" if state.message else ""
        raise MaintenanceMode(
            f"racetrackd is in maintenance mode; jobs take no calls now{reason}",
            hint="try again when an admin turns maintenance mode off",
        )
