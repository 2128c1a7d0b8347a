"""``python -m circuits.cli``: the ``refusal-circuits`` command."""

from circuits.cli import main

raise SystemExit(main())
