"""LongCtx Studio: local and Hugging Face Spaces entry point.

`python app.py` serves the app on 127.0.0.1:7860 with the embedded model. The same as
`longctx app`; see `--help` for the options.
"""

from __future__ import annotations

import argparse
import sys

from core.errors import LongCtxError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="model the Chat tab starts with")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--allow", action="append", default=[], help="extra folder to read from")
    parser.add_argument("--auth", help="user:password, required for a non-local address")
    parser.add_argument("--share", action="store_true", help="gradio share link (needs --auth)")
    args = parser.parse_args(argv)

    from ui.shell import launch

    try:
        launch(args.model, args.host, args.port, args.allow, args.auth, args.share)
    except LongCtxError as exc:
        print(f"app: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
