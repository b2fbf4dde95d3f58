"""`python -m benchmarks [prep|data|train|predict ...]` (benchmarks/cli.py)."""
import sys

from benchmarks.cli import main

sys.exit(main())
