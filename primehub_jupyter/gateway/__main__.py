"""Run the local gateway: `python -m primehub_jupyter.gateway --port 0 --admin-token-file F`."""

import sys

from .server import main

if __name__ == "__main__":
    sys.exit(main())
