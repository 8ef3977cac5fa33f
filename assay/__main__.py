"""``python -m assay``: the same entry point as the ``assay`` console script."""

from assay.cli import main

raise SystemExit(main())
