"""Kernel side: the REST client, the magics and the DeploymentPanel; never imports the server."""
