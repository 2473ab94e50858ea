"""``python -m mktsframe.server [--config mkts.yml] [--root DIR] [--port N] [--host H]``."""

from mktsframe.server.settings import main

raise SystemExit(main())
