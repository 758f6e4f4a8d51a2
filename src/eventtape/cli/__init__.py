"""The ``eventtape`` command line: read a store without the application's classes."""

from ._main import main as main

__all__ = ["main"]
