"""``python -m configctl`` and the ``configctl`` console script."""

from ._app import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
