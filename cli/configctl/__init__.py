"""configctl: the command line for configd (typer + rich + httpx, over configd's HTTP API only)."""

from ._app import app, main
from ._errors import ExitCode, exit_code_for

__all__ = ["ExitCode", "app", "exit_code_for", "main"]
