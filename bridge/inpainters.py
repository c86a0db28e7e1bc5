"""Audio-MAE models as the inpainters ``maedaw.dsp.repair`` fills long gaps with.

dsp takes an inpainter object (:class:`maedaw.dsp.inpainting.Inpainter`) or None and never
loads a model; loading one by name (the ``--model`` option) or adapting a checkpoint already
loaded (the daemon's worker) is done here, for the CLI, the daemon and the benchmarks.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from maedaw.dsp.audio_io import AudioError

if TYPE_CHECKING:
    from maedaw.models.audiomae import AudioMAE
    from maedaw.models.checkpoint import CheckpointMeta
    from maedaw.models.concealment import Concealer
    from maedaw.models.inpaint import InpaintConfig, Inpainter

log = logging.getLogger(__name__)


def load_inpainter(
    choice: str | os.PathLike[str] | None = None, config: InpaintConfig | None = None
) -> Inpainter | None:
    """The ``--model`` option: ``"none"`` -> None (AR only), else a model name, id or path
    (default: the bundled model). A model that cannot be loaded raises ``AudioError`` with the
    reason, so the CLI and the daemon report it like any other bad input."""
    from maedaw.models.checkpoint import CheckpointError
    from maedaw.models.inpaint import Inpainter

    if choice is not None and str(choice).strip().lower() == "none":
        return None
    try:
        return Inpainter.load(choice, config)
    except (CheckpointError, ValueError) as exc:
        raise AudioError(f"model {str(choice or 'default')!r}: {exc}") from exc


def checkpoint_inpainter(model: AudioMAE, meta: CheckpointMeta) -> Inpainter | None:
    """A loaded checkpoint as an inpainter for long gaps; None (AR only) when it cannot
    inpaint, e.g. a finetuned classifier checkpoint has no decoder (logged: the report then
    says the long spans were left alone)."""
    from maedaw.models.inpaint import Inpainter

    try:
        return Inpainter(model, meta.frontend)
    except ValueError as exc:
        log.warning("model %s cannot inpaint (%s): long gaps are left alone", meta.model_id, exc)
        return None


def load_concealer(choice: str | os.PathLike[str] | None = None) -> Concealer | None:
    """The ``--concealment`` option: ``"none"`` -> None, else a name or path of learned
    concealment weights (default: the bundled ``concealment-default``, None when this install
    has none). A model that cannot be loaded raises ``AudioError`` with the reason."""
    from maedaw.models.checkpoint import CheckpointError
    from maedaw.models.concealment import Concealer, bundled_concealment

    if choice is not None and str(choice).strip().lower() == "none":
        return None
    if choice is None and bundled_concealment() is None:
        log.info("no bundled concealment model: gaps go to AR and the Audio-MAE")
        return None
    try:
        return Concealer.load(choice)
    except (CheckpointError, ValueError) as exc:
        raise AudioError(f"concealment model {str(choice or 'default')!r}: {exc}") from exc
