import sys

from largemeta.cli import main

sys.exit(main())
