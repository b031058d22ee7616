"""``python -m anyoptim``: the command line."""

from anyoptim.cli import main

raise SystemExit(main())
