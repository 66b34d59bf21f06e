"""`python -m slm_operator.cli` runs the `slm` command."""

import sys

from slm_operator.cli import main

sys.exit(main())
