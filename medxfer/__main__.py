import sys

from medxfer.cli import main

sys.exit(main())
