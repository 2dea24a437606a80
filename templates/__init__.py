"""racetrackd's templates, shipped as package data: dockerfile/ (fragments job-type templates may
include) and dashboard/ (the dashboard's pages).

A package only so that the wheel carries these files and `importlib.resources` finds them the same
way in a source checkout, the racetrackd image and an installed wheel; look them up through
racetrackd.resources, never by path arithmetic.
"""

# racetrackd.resources checks this, so a foreign top-level `templates` package shadowing ours fails
# with a message naming the clash instead of "template not found" somewhere later.
OWNER = "racetrackd"
