import sys

from complexitynet.cli import main

sys.exit(main())
