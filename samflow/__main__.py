import sys

from samflow.cli import main

sys.exit(main())
