"""`python -m e2lmc` is the same as the `e2lmc` command."""

from e2lmc.cli import main

raise SystemExit(main())
