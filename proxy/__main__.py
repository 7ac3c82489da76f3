"""`python -m proxy` → `cli.main()`; the console script `turnout` is the same."""

from proxy.cli import main

raise SystemExit(main())
