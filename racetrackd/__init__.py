"""racetrackd: Racetrack on one host, as one daemon."""

__version__ = "0.1.0"
