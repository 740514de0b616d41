"""``python -m massmap_xr`` runs the ``massmap`` command."""

import sys

from massmap_xr.cli import main

sys.exit(main())
