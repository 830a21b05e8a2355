"""`python -m loop.export base-model <bundle>`: see loop.export.bundle.main."""
import sys

from loop.export.bundle import main

sys.exit(main())
