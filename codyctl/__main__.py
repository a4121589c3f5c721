"""``python -m codyctl``."""

from codyctl.cli import main

main()
