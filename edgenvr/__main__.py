"""`python -m edgenvr` runs the command line."""

from edgenvr.cli.main import main

raise SystemExit(main())
