"""``amore-proto``: AMORE's command line. It sits above every other package and imports downwards only."""
from amore.cli.main import build_parser, main  # noqa: F401
