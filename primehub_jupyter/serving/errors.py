"""Errors raised by model bundles, runtimes and the model server."""

from __future__ import annotations


class BundleError(ValueError):
    """A model bundle is missing, malformed or names something this server cannot serve."""


class PackagingError(ValueError):
    """`package()` refused the model or the target path; the message says what to do instead."""


class ModelLoadError(RuntimeError):
    """The bundle is well formed but its artifact cannot be loaded by its runtime."""


class PayloadError(ValueError):
    """A prediction request the server cannot accept; maps to an HTTP client error."""

    status = 400
    reason = "MICROSERVICE_BAD_DATA"


class PayloadTooLargeError(PayloadError):
    """The request body is larger than the server's `--max-body-bytes`."""

    status = 413


class UnsupportedEncodingError(PayloadError):
    """The request body's Content-Encoding is not one this server can undo."""

    status = 415
    reason = "UNSUPPORTED_CONTENT_ENCODING"
