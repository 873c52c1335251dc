"""``python -m optiloop``: the same as the ``optiloop`` command."""

from .cli import main

raise SystemExit(main())
