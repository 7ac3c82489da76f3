"""The distribution's version, read by the build and by `proxy.__version__`."""

__version__ = "0.1.0"
