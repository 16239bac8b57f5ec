"""python -m trit"""

import sys

from trit.launch import main

sys.exit(main())
