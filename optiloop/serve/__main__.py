"""``python -m optiloop.serve``: the serving pod's entry point."""

from .server import main

raise SystemExit(main())
