"""`python -m prep …`: the prep command line (prep/cli.py)."""
import sys

from prep.cli import main

if __name__ == "__main__":
  sys.exit(main())
