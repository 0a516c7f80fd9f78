"""The web UI (``/ui/``): server-rendered pages over the same store and tokens as the HTTP API."""

from .review import router as _review_router
from .rollouts import router as _rollouts_router
from .routes import router

router.include_router(_review_router)  # the editor and the change-request pages (configd/ui/review.py)
router.include_router(_rollouts_router)  # the config page's rollout steps (configd/ui/rollouts.py)

__all__ = ["router"]
