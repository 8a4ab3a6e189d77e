"""The Energon side of our shards: a sample type and a task encoder whose cooker turns the crude
samples of ``CrudeWebdataset`` (what ``energon prepare`` declares for our shards) into
``NmmSample``. Imports Megatron-Energon (and so torch): install ``nmm-curate[loaders]``.

    from megatron.energon import WorkerConfig, get_loader, get_train_dataset
    from mixtures.energon_task import NmmTaskEncoder

    ds = get_train_dataset("SHARDS/energon.yaml", worker_config=WorkerConfig.default_worker_config(),
                           batch_size=None, shuffle_buffer_size=100, max_samples_per_sequence=100,
                           task_encoder=NmmTaskEncoder())
    for sample in get_loader(ds):
        sample.record["group"], sample.text, sample.media  # {"jpg": tensor, "mp4": AVDecoder, ...}
"""

from __future__ import annotations

import dataclasses
from typing import Any

from megatron.energon import Cooker, DefaultTaskEncoder, Sample, basic_sample_keys, stateless

__all__ = ["NmmSample", "NmmTaskEncoder", "cook_nmm"]


@dataclasses.dataclass
class NmmSample(Sample):
    #: the ``<key>.json`` record: fields of the curated row plus group, stage, repeat, cost, media
    record: dict[str, Any]
    #: the primary text (``<key>.txt``), or None
    text: str | None
    #: every media member by suffix (``jpg``, ``img0.jpg``, ``mp4``, ``wav``...), decoded by
    #: Energon's decoder (images as tensors, video/audio as AVDecoder by default)
    media: dict[str, Any]


@stateless
def cook_nmm(raw: dict) -> NmmSample:
    media = {k: v for k, v in raw.items() if not k.startswith("__") and k not in ("json", "txt")}
    return NmmSample(**basic_sample_keys(raw), record=raw["json"], text=raw.get("txt"), media=media)


class NmmTaskEncoder(DefaultTaskEncoder):
    """Cooks every crude sample of nmm-curate shards (any group, any layout) into NmmSample."""

    cookers = [Cooker(cook_nmm)]
