import sys

from oomsight.cli.main import main

sys.exit(main())
