"""``lora``: low-rank factors; packs of trained LoRAs (:mod:`grafting.skillpack.lora`) are stored as these."""

from __future__ import annotations

from grafting.skillpack.compressors.base import register
from grafting.skillpack.compressors.svd_rank import SVDRank


@register("lora")
class LoraFactors(SVDRank):
    """Low-rank factors ``A @ B``. Packs from training use :func:`lora_pack`; ``compress`` gives the
    best rank-r factors of a given delta (truncated SVD), i.e. the most a rank-r LoRA could express."""
