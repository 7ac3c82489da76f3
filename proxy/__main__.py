"""`python -m proxy` → `cli.main()`; the console script `turnout` is the same."""

from proxy.cli.main import main

raise SystemExit(main())
