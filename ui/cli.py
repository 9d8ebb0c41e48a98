"""The `longctx` command: core's command line (`core.cli.main`) plus `longctx app`, which starts
this package's Gradio app. Core never imports the UI, so the UI hands it the launcher here.
"""

from __future__ import annotations

import sys

from core.cli.main import main as core_main


def launch(
    model: str, host: str, port: int, allow: list[str], auth: str | None, share: bool
) -> None:
    """Build and serve the app (gradio is imported only for `longctx app`)."""
    from ui import shell

    shell.launch(model, host, port, allow, auth, share)


def main(argv: list[str] | None = None) -> int:
    return core_main(argv, launch_app=launch)


if __name__ == "__main__":
    sys.exit(main())
