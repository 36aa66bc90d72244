"""`python -m dwnotify`."""

from .cli import run

run()
