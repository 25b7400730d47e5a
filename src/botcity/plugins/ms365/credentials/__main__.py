"""``python -m botcity.plugins.ms365.credentials`` runs the ``botcity-ms365`` command."""

from .cli import main

raise SystemExit(main())
