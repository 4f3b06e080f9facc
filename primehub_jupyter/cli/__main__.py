"""`python -m primehub_jupyter.cli`: the same as `primehub-deploy`."""

from . import main

main()
