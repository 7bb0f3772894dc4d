"""A command whose code is imported only when it runs, so that every other command starts without its libraries:
the hub's (SQLAlchemy, aiohttp, PyAV through the clip checks) and the ONVIF client's made every command start
about a second later and 70 MB larger on a small x86 box (measured with `python -X importtime`), and the
supervisor of `edgenvr run` kept them for nothing.

The parser of such a command lives in a light module and names its handler by module and function
(tests/test_cli.py resolves every one).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Deferred:
    """The handler `module.name`, imported when the command runs."""
    module: str
    name: str

    def handler(self) -> Callable[[argparse.Namespace], int]:
        found: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(self.module), self.name)
        return found

    def __call__(self, args: argparse.Namespace) -> int:
        return self.handler()(args)
