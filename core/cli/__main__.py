"""`python -m core.cli`: the command line without `app` (child processes start training this way)."""

import sys

from core.cli.main import main

sys.exit(main())
