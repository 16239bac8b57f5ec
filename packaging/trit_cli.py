"""Entry point of the bundled `trit` executable: the command line (no subcommand opens the app)."""

import sys

from trit.launch import main

if __name__ == "__main__":
    sys.exit(main())
