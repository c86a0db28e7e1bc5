"""What a job does: the bridge's typed call into ``dsp``, then the stem and report on disk."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maedaw.core.util import ProgressFn, write_json_atomic
from maedaw.dsp.repair import RepairConfig, repair_file

from .contract import ErrorCode, RequestError
from .inpainters import checkpoint_inpainter
from .jobs import Job

if TYPE_CHECKING:
    from maedaw.models.audiomae import AudioMAE
    from maedaw.models.checkpoint import CheckpointMeta
    from maedaw.models.concealment import Concealer
    from maedaw.models.embed import Embedder
    from maedaw.models.inpaint import Inpainter

log = logging.getLogger(__name__)


class ModelCache:
    """The worker's loaded model, kept between jobs and reloaded only when the served
    checkpoint (its path or its files on disk) changes; loaded only when a job asks. A
    model that cannot be loaded gives ``None`` and the reason in ``error``: repair then
    falls back to AR alone, and jobs that need a model say why they cannot run."""

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._loaded: tuple[AudioMAE, CheckpointMeta] | None = None
        self.error = ""

    @staticmethod
    def _fingerprint(path: Path) -> tuple[Any, ...]:
        stats = [p.stat() for p in (path, path.with_suffix(".safetensors"))]
        return (str(path), *((s.st_mtime_ns, s.st_size) for s in stats))

    def get(self, path: Path | None) -> tuple[AudioMAE, CheckpointMeta] | None:
        if path is None:
            self.error = "no model is installed"
            return None
        from maedaw.models.checkpoint import CheckpointError, load_model

        try:
            key = self._fingerprint(path)
            if key != self._key:
                self._key, self._loaded, self.error = key, None, ""
                model, meta = load_model(path)
                self._loaded = (model.eval(), meta)
                log.info("worker loaded model %s from %s", meta.model_id, path)
        except (CheckpointError, OSError, ValueError) as exc:
            self.error = f"the model {path} cannot be loaded: {exc}"
            log.error("%s", self.error)
        return self._loaded

    def validate(self, path: Path) -> str:
        """Load ``path`` and check it (models_watch.smoke_test); its model id, or raise. A
        good one stays loaded: the next job that is served it needs no second load."""
        from maedaw.models.checkpoint import load_model

        from .models_watch import smoke_test

        key = self._fingerprint(path)
        model, meta = load_model(path)
        smoke_test(model, meta.config)
        self._key, self._loaded, self.error = key, (model.eval(), meta), ""
        return meta.model_id

    def ref(
        self,
        path: Path | None,
        concealment: Path | None = None,
        concealers: ConcealerCache | None = None,
    ) -> ModelRef:
        return ModelRef(path, self, concealment, concealers)


class ConcealerCache:
    """The worker's learned concealment model (``models/concealment.py``), kept between jobs
    and reloaded when the served pair changes on disk. One that cannot be loaded gives None
    (its gaps go to AR and the Audio-MAE, as without one) and the reason in ``error``."""

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._loaded: Concealer | None = None
        self.error = ""

    def get(self, path: Path | None) -> Concealer | None:
        if path is None:
            return None
        from maedaw.models.checkpoint import CheckpointError
        from maedaw.models.concealment import Concealer

        try:
            key = ModelCache._fingerprint(path)
            if key != self._key:
                self._key, self._loaded, self.error = key, None, ""
                self._loaded = Concealer.load(path)
                log.info("worker loaded concealment %s from %s", self._loaded.model_id, path)
        except (CheckpointError, OSError, ValueError) as exc:
            self.error = f"the concealment model {path} cannot be loaded: {exc}"
            log.error("%s", self.error)
        return self._loaded

    def validate(self, path: Path) -> str:
        """Load ``path`` and conceal one gap (models_watch.smoke_test_concealer); its model id,
        or raise. A good one stays loaded for the next job."""
        from maedaw.models.concealment import Concealer

        from .models_watch import smoke_test_concealer

        key = ModelCache._fingerprint(path)
        concealer = Concealer.load(path)
        smoke_test_concealer(concealer)
        self._key, self._loaded, self.error = key, concealer, ""
        return concealer.model_id


@dataclass(frozen=True, slots=True)
class ModelRef:
    """The models a job runs with: the checkpoints served when it started, loaded on demand."""

    path: Path | None
    cache: ModelCache
    concealment: Path | None = None  # the learned concealment pair's JSON, if one is served
    concealers: ConcealerCache | None = None

    def load(self) -> tuple[AudioMAE, CheckpointMeta] | None:
        return self.cache.get(self.path)

    def require(self, what: str) -> tuple[AudioMAE, CheckpointMeta]:
        loaded = self.load()
        if loaded is None:
            raise RequestError(ErrorCode.UNSUPPORTED, f"{what} needs a model: {self.cache.error}")
        return loaded

    def embedder(self, what: str) -> Embedder:
        """The model as an embedder (tag, similar, teach), or ``unsupported`` saying why not."""
        from maedaw.models.embed import Embedder

        return Embedder(*self.require(what))

    def inpainter(self) -> Inpainter | None:
        """The model as an inpainter for long gaps; None (AR only) when there is none or it
        cannot be loaded or cannot inpaint (then the report says the long spans were left
        alone)."""
        loaded = self.load()
        return None if loaded is None else checkpoint_inpainter(*loaded)

    def concealer(self) -> Concealer | None:
        """The learned concealment model for 10-120 ms gaps, or None (then they go to AR and
        the Audio-MAE as before)."""
        if self.concealers is None:
            return None
        return self.concealers.get(self.concealment)


def run_repair(job: Job, progress: ProgressFn, model: ModelRef) -> dict:
    """Repair the job's region; write the stem, then its report. Returns the summary."""
    request = job.request
    assert job.stem is not None and job.report is not None
    spans = None if request.options.spans == "auto" else request.options.spans
    if job.stem.exists() or job.report.exists():
        raise RequestError(ErrorCode.INTERNAL, f"{job.stem} already exists; not overwriting")
    # The stem is written (atomically) inside; a cancel during the work raises from
    # ``progress`` and leaves nothing, and one right after is undone by the engine.
    report = repair_file(
        request.source,
        job.stem,
        request.start,
        request.end,
        spans,
        RepairConfig(sensitivity=request.options.sensitivity),
        progress=lambda f, s: progress(0.98 * f, s),
        inpainter=model.inpainter(),
        concealer=model.concealer(),
    )
    job.check()
    payload = report.to_dict()
    payload.update(output=str(job.stem), job_id=job.job_id, client_job=job.client_job)
    write_json_atomic(job.report, payload, indent=2)
    progress(1.0, "written")
    return {
        "repaired": payload["repaired"],
        "left_alone": payload["left_alone"],
        "seconds": round(sum(report.timings.values()), 3),
        "marks": report.marks(),
        "marks_total": len(report.spans),
    }


def run_restore(job: Job, progress: ProgressFn, model: ModelRef) -> dict:
    """Run the restoration op on the job's region; write the stem, then its report."""
    from maedaw.dsp.restore import OptionError, restore_file

    request = job.request
    assert job.stem is not None and job.report is not None and request.op is not None
    if job.stem.exists() or job.report.exists():
        raise RequestError(ErrorCode.INTERNAL, f"{job.stem} already exists; not overwriting")
    try:
        report = restore_file(
            request.source,
            job.stem,
            request.start,
            request.end,
            request.op,
            request.options.params,
            progress=lambda f, s: progress(0.98 * f, s),
        )
    except OptionError as exc:
        raise RequestError(ErrorCode.BAD_REQUEST, str(exc)) from exc
    job.check()
    payload = report.to_dict()
    payload.update(output=str(job.stem), job_id=job.job_id, client_job=job.client_job)
    write_json_atomic(job.report, payload, indent=2)
    progress(1.0, "written")
    return report.summary()


def run_tag(job: Job, progress: ProgressFn, model: ModelRef) -> dict:
    """Tag the job's region; the tags travel in the done reply (no stem, no report file)."""
    from maedaw.models.tagging import TaggingError, tag_region

    request = job.request
    embedder = model.embedder("tagging")
    try:
        tags = tag_region(
            request.source,
            request.start,
            request.end,
            model=embedder,
            top_k=request.options.top_k,
            progress=lambda f: progress(0.98 * f, "embedding"),
        )
    except TaggingError as exc:
        raise RequestError(ErrorCode.UNSUPPORTED, str(exc)) from exc
    job.check()
    progress(1.0, "tagged")
    # per-window tags can be long for a long region: the reply carries the clip's tags
    return {key: tags[key] for key in ("model_id", "tags", "start", "end")}


def run_similar(job: Job, progress: ProgressFn, model: ModelRef) -> dict:
    """Rank the job's candidate regions by similarity to its region (no files written)."""
    from maedaw.models.similar import rank_regions

    request = job.request
    embedder = model.embedder("finding similar audio")
    query = embedder.embed_file(request.source, request.start, request.end)
    readable = [c for c in request.candidates if not c.error]
    ranked, skipped = rank_regions(
        query,
        [(c.id, c.source, c.start, c.end) for c in readable],
        embedder,
        top_k=request.options.top_k,
        progress=lambda f: progress(0.02 + 0.96 * f, "embedding"),
    )
    job.check()
    refused = [{"id": c.id, "error": c.error} for c in request.candidates if c.error]
    progress(1.0, "ranked")
    return {
        "model_id": embedder.model_id,
        "start": round(query.start, 4),
        "end": round(query.end, 4),
        "results": ranked,
        "skipped": refused + skipped,
    }


def run_teach(job: Job, progress: ProgressFn, model: ModelRef) -> dict:
    """Add the job's region as an example of the taught tag ``op`` (created if new) in the
    daemon user's tag library; later tag jobs score it with the other tags."""
    from maedaw.models.tags_user import TagLibrary, TagLibraryError

    request = job.request
    assert request.op is not None
    embedder = model.embedder("teaching a tag")
    progress(0.02, "embedding")
    try:
        library = TagLibrary.open()
        job.check()  # cancelled while the model loaded: the library is left as it was
        tag = library.teach(
            request.op,
            [request.source],
            embedder,
            regions=[(request.start, request.end)],
        )
    except TagLibraryError as exc:
        raise RequestError(ErrorCode.BAD_REQUEST, str(exc)) from exc
    progress(1.0, "taught")
    return {"name": tag.name, "examples": len(tag.examples), "library": str(library.path)}


RUNNERS: dict[str, Callable[[Job, ProgressFn, ModelRef], dict]] = {
    "repair": run_repair,
    "restore": run_restore,
    "tag": run_tag,
    "similar": run_similar,
    "teach": run_teach,
}


def run_job(job: Job, progress: ProgressFn, model: ModelRef) -> dict:
    runner = RUNNERS.get(job.request.kind)
    if runner is None:
        raise RequestError(ErrorCode.UNSUPPORTED, f"{job.request.kind} is not available yet")
    return runner(job, progress, model)
