"""Progress bars: on in a terminal, off under CI (``CI`` set) or when stdout is not a TTY.

``GRAFTING_PROGRESS=1`` / ``=0`` overrides the rule (e.g. bars in a notebook, none in a terminal).
``${progress_bar:}`` in the configs (``conf/trainer/*.yaml``) resolves to :func:`show_progress`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")
_OFF = ("", "0", "false", "no")


def show_progress() -> bool:
    """Whether to draw progress bars here."""
    forced = os.environ.get("GRAFTING_PROGRESS")
    if forced is not None:
        return forced.strip().lower() not in _OFF
    return sys.stdout.isatty() and os.environ.get("CI", "").strip().lower() in _OFF


def progress(iterable: Iterable[T], desc: str | None = None, total: int | None = None) -> Iterable[T]:
    """``iterable`` with a tqdm bar (count, rate and ETA) when :func:`show_progress`, else unchanged."""
    if not show_progress():
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, dynamic_ncols=True, leave=False)


def quiet_library_bars() -> None:
    """Without bars, also keep huggingface_hub's and transformers' own bars ("Loading weights") off."""
    if show_progress():
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when huggingface_hub is imported
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging

        logging.disable_progress_bar()
