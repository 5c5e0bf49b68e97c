import sys

from quailmail.cli.main import main

sys.exit(main())
