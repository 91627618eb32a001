import sys

from aisbatchfs.cli import main

sys.exit(main())
