"""The base of the CLIP-backed operators (``clip_score``, ``aesthetic_score``, ``clip_tags``):
weights checked on the driver before any work, the model loaded once per worker, and a batch of
records turned into image embeddings without letting decoding starve the model.

Decode and preprocessing run in a thread pool (``decode_workers``) while the model encodes the
previous batch on the calling thread.

The parts it is built from:

- ``operators.clip.params``: ``ClipParams``, the model, weights and device settings;
- ``operators.clip.weights``: resolving ``model``/``pretrained`` (local checkpoint or cached tag,
  nothing downloaded) and checking the checkpoint against the architecture;
- ``operators.clip.loading``: picking the device and loading the model once per process;
- ``operators.clip.inputs``: the images of each row and their decoding for the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

import numpy as np

from operators.base import BatchOperator, StageContext
from operators.clip.inputs import ImageJob, decode_image, image_jobs, is_document, middle_frame
from operators.clip.loading import ClipBundle, load_clip
from operators.clip.params import ClipParams
from operators.clip.weights import ClipSpec, check_weights, resolve_spec
from operators.errors import media_failure
from operators.media_io import uri_of

__all__ = ["CLIP_REQUIRES", "ClipOperator", "mean_embedding", "to_float16_list"]

CLIP_REQUIRES: tuple[tuple[str, str], ...] = (
    ("torch", "torch==2.14.1"),
    ("open_clip", "open_clip_torch==3.3.0"),
)


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


CP = TypeVar("CP", bound=ClipParams)


class ClipOperator(BatchOperator[CP]):
    """Base of the CLIP-backed operators: weights checked on the driver, model loaded once per
    worker (the engine runs ``stateful`` operators as an actor pool), images embedded in batches."""

    stateful: ClassVar[bool] = True
    requires: ClassVar[tuple[tuple[str, str], ...]] = CLIP_REQUIRES
    default_batch_size: ClassVar[int] = 256

    def __init__(self, params: Any = None, ctx: StageContext | None = None, *, stage: str | None = None) -> None:
        super().__init__(params, ctx, stage=stage)
        self._spec: ClipSpec | None = None
        self._bundle: ClipBundle | None = None

    # -- driver side
    @property
    def where(self) -> str:
        return f"{self.stage}.params"

    def spec(self) -> ClipSpec:
        if self._spec is None:
            self._spec = resolve_spec(self.params, self.where)  # type: ignore[arg-type]
        return self._spec

    def validate_setup(self) -> None:
        check_weights(self.spec(), self.where)

    # -- worker side
    @property
    def bundle(self) -> ClipBundle:
        if self._bundle is None:
            p = self.params
            self._bundle = load_clip(
                self.spec(), device=p.device, precision=p.precision, threads=p.threads, batch_size=p.batch_size
            )
        return self._bundle

    def __getstate__(self) -> dict[str, Any]:  # never pickle a loaded model into a task
        state = dict(self.__dict__)
        state["_bundle"] = None
        return state

    def _pixels(self, job: ImageJob) -> Any:
        b = self.bundle
        img = middle_frame(job.media, b.image_size) if job.kind == "video" else decode_image(job.media, b.image_size)
        return b.preprocess(img)

    def embed(self, jobs: list[ImageJob]) -> list[np.ndarray | BaseException]:
        """One L2-normalised embedding per job (or the exception that stopped its decoding).

        Decoding and preprocessing run in ``decode_workers`` threads, ahead of the model, which
        encodes ``batch_size`` images at a time on this thread.
        """
        import torch

        p = self.params
        b = self.bundle
        out: list[np.ndarray | BaseException] = [None] * len(jobs)  # type: ignore[list-item]

        def work(job: ImageJob) -> Any:
            try:
                return self._pixels(job)
            except Exception as e:  # noqa: BLE001 - reported per image
                return _Failed(e)

        pending: list[tuple[int, Any]] = []

        def flush() -> None:
            if not pending:
                return
            emb = b.encode_images(torch.stack([t for _, t in pending]))
            for (k, _), e in zip(pending, emb, strict=True):
                out[k] = e
            pending.clear()

        with ThreadPoolExecutor(max_workers=p.decode_workers, thread_name_prefix=f"{self.stage}-decode") as pool:
            for k, res in enumerate(_bounded_map(pool, work, jobs, ahead=2 * p.batch_size)):
                if isinstance(res, _Failed):
                    out[k] = res.error
                    continue
                pending.append((k, res))
                if len(pending) >= p.batch_size:
                    flush()
            flush()
        return out

    def fail_row(self, row: dict[str, Any], error: BaseException, media: dict[str, Any]) -> None:
        """A row whose image cannot be decoded is quarantined with the reason."""
        failure = media_failure(error, uri_of(media))
        self.quarantine(row, failure.reason, failure.detail)

    def row_embeddings(self, rows: list[dict[str, Any]], text_fields: Iterable[str] | None = None
                       ) -> list[list[tuple[ImageJob, np.ndarray]]]:  # fmt: skip
        """Per row, its (job, embedding) pairs. A broken image quarantines its row, except in
        documents (interleaved), where the image is skipped."""
        p = self.params
        fields = tuple(text_fields) if text_fields is not None else None
        jobs = [j for i, r in enumerate(rows) for j in image_jobs(r, i, text_fields=fields, limit=p.max_images_per_row)]
        embs = self.embed(jobs)
        per_row: list[list[tuple[ImageJob, np.ndarray]]] = [[] for _ in rows]
        failed: set[int] = set()
        for job, e in zip(jobs, embs, strict=True):
            if isinstance(e, BaseException):
                if not is_document(rows[job.row]) and job.row not in failed:
                    failed.add(job.row)
                    self.fail_row(rows[job.row], e, job.media)
                continue
            per_row[job.row].append((job, e))
        for i in failed:
            per_row[i] = []
        return per_row


def _bounded_map(pool: ThreadPoolExecutor, fn: Any, items: list[Any], ahead: int) -> Iterator[Any]:
    """``pool.map`` in order, but with at most ``ahead`` items decoded and waiting (bounded memory)."""
    from collections import deque

    queue: deque = deque()
    it = iter(items)
    for item in it:
        queue.append(pool.submit(fn, item))
        if len(queue) >= ahead:
            break
    while queue:
        yield queue.popleft().result()
        nxt = next(it, None)
        if nxt is not None:
            queue.append(pool.submit(fn, nxt))


def to_float16_list(vec: np.ndarray) -> list[float]:
    """A vector rounded to float16 precision, as short JSON floats."""
    return [float(str(x)) for x in vec.astype(np.float16)]


def mean_embedding(vectors: list[np.ndarray]) -> np.ndarray:
    v = np.mean(np.stack(vectors), axis=0)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v
