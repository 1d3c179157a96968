"""``python -m fxgrow.cli``: the ``fxgrow`` command."""

from . import main

raise SystemExit(main())
