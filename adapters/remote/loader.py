"""litellm, imported on first use, once, with the offline environment in place.

It is never imported at module import (it takes seconds), and only after
``prepare_offline_env()`` so it reads its bundled price map instead of fetching one.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

from adapters._offline import prepare_offline_env

_litellm: Any = None
_litellm_lock = threading.Lock()


def load_litellm() -> Any:
    """litellm, imported once with the offline environment in place."""
    global _litellm
    with _litellm_lock:
        if _litellm is None:
            prepare_offline_env()
            lib: Any = importlib.import_module("litellm")
            # Its "Provider List: ..." / "Give Feedback" banners go to stdout, not to logging.
            lib.suppress_debug_info = True
            _litellm = lib
    return _litellm


def loaded_litellm() -> Any:
    """litellm if it is imported already, else ``None`` (so the request path never imports it)."""
    return _litellm
