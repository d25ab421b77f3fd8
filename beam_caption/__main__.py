"""`python -m beam_caption` is the same as the `beam-caption` command."""

import sys

from beam_caption.cli import main

if __name__ == "__main__":
    sys.exit(main())
