"""Command-line pieces the tools share."""
from __future__ import annotations

import argparse
import ast


class ParseKwargs(argparse.Action):
    """``key=value`` pairs into a dict, values read as Python literals where they parse (as timm's tools)."""

    def __call__(self, parser, namespace, values, option_string=None):
        kwargs = {}
        for item in values:
            key, _, value = item.partition("=")
            try:
                kwargs[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                kwargs[key] = value
        setattr(namespace, self.dest, kwargs)
