"""Delta compressors, one file each: ``<name>.py`` registers the compressor ``<name>``.

A new compressor is one new file here: a :class:`~grafting.skillpack.compressors.base.Compressor` subclass with
``@register("<name>")``, ``compress`` and ``decompress``. ``grafting.names.COMPRESSORS`` lists this folder
(without importing torch), so ``skillpack.methods.<method>.<kind>=<name>`` accepts it with no other edit.
Importing this package imports every file, so :data:`COMPRESSORS` is complete.
"""

from __future__ import annotations

import importlib

from grafting import names
from grafting.skillpack.compressors.base import (
    COMPRESSORS,
    CompressedTensor,
    Compressor,
    decode_sparse,
    decompress,
    encode_sparse,
    get_compressor,
    keep_count,
    register,
)

for _name in names.COMPRESSORS:
    importlib.import_module(f"{__name__}.{_name}")
names.registry(names.COMPRESSORS, COMPRESSORS)  # each file registered the name it is called by (and no other)

from grafting.skillpack.compressors.bitdelta import BitDelta  # noqa: E402
from grafting.skillpack.compressors.dare import Dare  # noqa: E402
from grafting.skillpack.compressors.dense import Dense  # noqa: E402
from grafting.skillpack.compressors.lora import LoraFactors  # noqa: E402
from grafting.skillpack.compressors.magnitude import Magnitude  # noqa: E402
from grafting.skillpack.compressors.none import NoCompression  # noqa: E402
from grafting.skillpack.compressors.svd_energy import SVDEnergy  # noqa: E402
from grafting.skillpack.compressors.svd_quant import SVDQuant  # noqa: E402
from grafting.skillpack.compressors.svd_rank import SVDRank  # noqa: E402

__all__ = [
    "COMPRESSORS", "BitDelta", "CompressedTensor", "Compressor", "Dare", "Dense", "LoraFactors", "Magnitude",
    "NoCompression", "SVDEnergy", "SVDQuant", "SVDRank", "decode_sparse", "decompress", "encode_sparse",
    "get_compressor", "keep_count", "register",
]
