"""`python -m service …` runs the `tollgate` command line."""

from .cli import main

raise SystemExit(main())
