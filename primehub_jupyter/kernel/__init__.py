"""Kernel side: the REST client (and later the magics and widgets); never imports the server."""
