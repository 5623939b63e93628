"""``python -m gen_ai`` runs the ``gen-ai`` command line."""

from .cli import main

raise SystemExit(main())
