import sys

from distsync.cli import main

sys.exit(main())
