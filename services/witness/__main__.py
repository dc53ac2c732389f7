"""``python -m services.witness``: a standalone witness (see services.witness.service)."""

import sys

from services.witness.service import main

sys.exit(main())
