"""Entry point: `python -m primehub_jupyter.serving BUNDLE --port N` runs the model server."""

import sys

from .server import main

if __name__ == "__main__":
    sys.exit(main())
