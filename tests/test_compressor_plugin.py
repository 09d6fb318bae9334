"""A new compressor is one file in grafting/skillpack/compressors: the config accepts its name and a pack uses it,
with no other edit (a fresh process: the names are listed from the folder when the package loads)."""

import subprocess
import sys
from pathlib import Path

import pytest

from grafting.skillpack import compressors

FOLDER = Path(compressors.__file__).parent
TOY = '''"""``toy_half``: half of every delta, stored dense (a newcomer's compressor in one file)."""

from torch import Tensor

from grafting.skillpack.compressors.base import CompressedTensor, Compressor, register


@register("toy_half")
class ToyHalf(Compressor):
    def compress(self, delta: Tensor, *, key: str = "") -> CompressedTensor:
        return CompressedTensor({"values": (delta.detach().float() / 2).contiguous()}, self._meta(delta))

    @classmethod
    def decompress(cls, c: CompressedTensor) -> Tensor:
        return c.tensors["values"].float().reshape(c.shape)
'''
CHECK = '''
import torch
import grafting
assert grafting.__file__.startswith({copy!r}), grafting.__file__  # the copy with the toy file, not the tree
from conftest import compose_config
from pathlib import Path
from grafting.schema import validate_config
from grafting.skillpack import compress_delta, decompress_state
cfg = compose_config(["stage=skillpack", "debug=smoke", "skillpack.methods.graftllm.mlp=toy_half"], Path({tmp!r}))
validate_config(cfg)
delta = {{"gpt_neox.layers.0.mlp.dense_h_to_4h.weight": torch.ones(4, 3)}}
policy = {{"mlp": "toy_half", "vector": "dense"}}
out = decompress_state(compress_delta(delta, policy))
assert torch.equal(out["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"], torch.full((4, 3), 0.5)), out
print("toy_half ok")
'''


@pytest.mark.e2e
def test_a_new_compressor_is_one_file(tmp_path):
    """The toy file goes into a copy of the sources, so tests running beside this one never see it."""
    from conftest import in_copy_env, source_copy

    copy = source_copy(tmp_path)
    toy = copy / FOLDER.relative_to(FOLDER.parents[2]) / "toy_half.py"
    assert toy.parent.is_dir() and not toy.exists()
    toy.write_text(TOY)
    proc = subprocess.run([sys.executable, "-c", CHECK.format(tmp=str(tmp_path), copy=str(copy))], cwd=copy / "tests",
                          env=in_copy_env(copy), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "toy_half ok" in proc.stdout


def test_the_folder_lists_exactly_the_registered_compressors():
    from grafting import names

    assert set(names.COMPRESSORS) == set(compressors.COMPRESSORS)
    assert all(compressors.COMPRESSORS[n].name == n for n in names.COMPRESSORS)
