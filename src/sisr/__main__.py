"""``python -m sisr``: the same as the ``sisr`` command."""

import sys

try:
    from sisr.cli import main
except KeyboardInterrupt:  # Ctrl-C in the few milliseconds before main can catch it
    print("sisr: error: interrupted", file=sys.stderr, flush=True)
    raise SystemExit(130) from None

raise SystemExit(main())
