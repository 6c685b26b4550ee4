"""Entry point: ``python -m medmodels``."""
import sys

from medmodels.cli import main

sys.exit(main())
