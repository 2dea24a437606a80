#!/usr/bin/env python3
"""Print racetrackd's runtime dependencies (setup.cfg install_requires), one a line.

Used by the image build and by scripts/build-wheels.sh, so the list lives in setup.cfg only.
Standard library only: it runs before anything is installed.
"""

import configparser
import sys
from pathlib import Path

setup_cfg = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "setup.cfg")
config = configparser.ConfigParser()
config.read(setup_cfg)
for line in config["options"]["install_requires"].splitlines():
    if line.strip():
        print(line.strip())
