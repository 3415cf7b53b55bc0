"""`python -m smolgrpo ...` and `torchrun -m smolgrpo ...`: the `smolgrpo` command."""

import sys

from smolgrpo.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
