import sys

from cadmr.cli import main

sys.exit(main())
