"""Entry point of the bundled windowed `Trit` executable (Windows, macOS): the desktop app only."""

import sys

from trit.app.qt.app import main

if __name__ == "__main__":
    sys.exit(main())
