"""Online area: what users did with what was served (per surface and experiment arm), from the
day's serving log."""
