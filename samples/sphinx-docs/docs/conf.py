project = "racetrackd sample docs"
author = "racetrackd"
extensions: list[str] = []
html_theme = "alabaster"
html_static_path: list[str] = []
