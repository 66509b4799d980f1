"""``python -m deploy``: the ``klantreis`` command."""

from deploy.cli import main

raise SystemExit(main())
