"""The web UI (``/ui/``): server-rendered pages over the same store and tokens as the HTTP API."""

from .routes import router

__all__ = ["router"]
