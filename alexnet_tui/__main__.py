"""`python -m alexnet_tui` runs the same command line as `alexnet-tui`."""

import sys

from alexnet_tui.cli import main

if __name__ == "__main__":
    sys.exit(main())
