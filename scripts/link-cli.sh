#!/usr/bin/env bash
# Put rtd and racetrackd on PATH so the README's commands work as written: symlink them from
# .venv/bin into the first directory that is writable and where each name is free or already
# a link to ours. Never replaces someone else's rtd. Safe to run again (a link to ours is kept).
# RTD_LINK_DIRS (colon-separated, default /usr/local/bin:~/.local/bin) and RTD_LINK_SOURCE
# (default this checkout's .venv/bin) exist so tests can run this without touching the host.
set -euo pipefail
source_dir="${RTD_LINK_SOURCE:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin}"
link_dirs="${RTD_LINK_DIRS:-/usr/local/bin:${HOME}/.local/bin}"
names=(rtd racetrackd)

# Free, or a symlink already pointing at our executable.
usable() {
  local dir=$1 name
  for name in "${names[@]}"; do
    if [ -L "$dir/$name" ]; then
      [ "$(readlink "$dir/$name")" = "$source_dir/$name" ] || return 1
    elif [ -e "$dir/$name" ]; then
      return 1
    fi
  done
}

IFS=: read -r -a candidates <<<"$link_dirs"
for dir in "${candidates[@]}"; do
  [ -n "$dir" ] || continue
  # ~/.local/bin may not exist yet on a fresh machine; /usr/local/bin is only used when writable.
  if [ ! -d "$dir" ] && [ "$dir" = "${candidates[-1]}" ]; then mkdir -p "$dir" 2>/dev/null || continue; fi
  [ -d "$dir" ] && [ -w "$dir" ] && usable "$dir" || continue
  for name in "${names[@]}"; do
    ln -sfn "$source_dir/$name" "$dir/$name"
  done
  case ":${PATH}:" in
    *":${dir}:"*) echo "-----> rtd and racetrackd are on PATH (linked in ${dir})" ;;
    *) echo "-----> rtd and racetrackd linked in ${dir}; add it to PATH: export PATH=\"${dir}:\$PATH\"" ;;
  esac
  exit 0
done
echo "-----> rtd and racetrackd not linked (names taken or directories not writable); add them to PATH: export PATH=\"${source_dir}:\$PATH\""
