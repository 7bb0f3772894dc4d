"""`python -m edgenvr` runs the command line."""

from edgenvr.cli import main

raise SystemExit(main())
