import sys

from amore.cli.main import main

sys.exit(main())
