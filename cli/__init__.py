"""`rtd`: the racetrackd command line. Talks HTTP only; never imports the daemon."""

__version__ = "0.1.0"
