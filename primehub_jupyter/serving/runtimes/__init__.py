"""The built-in runtimes and packagers, one module per framework (registered in pyproject.toml).

`base` holds the interfaces a plugin implements and `common` the helpers they share; the
registry that finds them by name is `primehub_jupyter.serving.registry`.
"""
