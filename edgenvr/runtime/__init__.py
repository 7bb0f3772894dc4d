"""`edgenvr run`: the supervisor that starts, watches and feeds every process."""
