"""LongCtx Studio: local and Hugging Face Spaces entry point.

`python app.py` serves the app on 127.0.0.1:7860 with the embedded model (on a Space: on
0.0.0.0, with owner-only training; see core/hosting/space.py). The same as `longctx app`; see `--help`
for the options.
"""

from __future__ import annotations

import argparse
import sys

from core.cli.main import add_app_args, run_app
from core.errors import LongCtxError
from ui.cli import launch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_app_args(parser)
    args = parser.parse_args(argv)
    args.process_argv = sys.argv[1:] if argv is None else None  # as core.cli.main does
    try:
        return run_app(args, launch)
    except LongCtxError as exc:
        print(f"app: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
