"""``python -m sisr``: the same as the ``sisr`` command."""

from sisr.cli import main

raise SystemExit(main())
