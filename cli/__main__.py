"""`python -m cli`: the same as the `tidings` command."""

import sys

from cli import main

sys.exit(main())
