"""IIP: an open industrial internet platform."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("iip")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"
