"""`python -m loxgw` is the `loxgw` command."""

import sys

from loxgw.cli import main

sys.exit(main())
