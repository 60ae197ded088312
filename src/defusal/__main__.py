"""Allow ``python -m defusal``."""

import sys

from defusal.cli import main

sys.exit(main())
