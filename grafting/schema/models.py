"""Model specs: ``host``, ``donor`` and ``transplant.source`` (conf/model/*.yaml), and their architectures."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from grafting import names
from grafting.schema.base import LR, Count, Decay, Kwargs, Node, Pos, Prob, Seed, Text, Vocab

#: lightning's accelerator names (lightning's registry: reading it imports lightning, which takes seconds;
#: tests/test_validation.py checks this tuple against it).
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


class Arch(Kwargs):
    """A model's architecture: keyword arguments of its transformers config (gpt_neox/llama and gpt2 names;
    other keys are that config's to check)."""

    model_type: Text = None
    hidden_size: Pos = None
    num_hidden_layers: Pos = None
    num_attention_heads: Pos = None
    num_key_value_heads: Pos = None
    intermediate_size: Pos = None
    vocab_size: Pos = None
    max_position_embeddings: Pos = None
    n_embd: Pos = None
    n_layer: Pos = None
    n_head: Pos = None
    n_positions: Pos = None
    rotary_pct: Annotated[float, Field(gt=0, le=1)] = None
    rotary_emb_base: Annotated[float, Field(gt=0)] = None
    rope_theta: Annotated[float, Field(gt=0)] = None
    use_parallel_residual: bool = None
    tie_word_embeddings: bool = None

    @property
    def blocks(self) -> int | None:
        """The number of transformer blocks, if this architecture says."""
        return self.num_hidden_layers if self.num_hidden_layers is not None else self.n_layer


class Pretrain(Node):
    """The pretraining recipe of a ``tiny_pretrained`` model (and train.yaml's ``tiny.pretrain``)."""

    steps: Pos = None
    lr: LR = None
    warmup_steps: Count = None
    weight_decay: Decay = None
    batch_size: Pos = None
    seq_len: Pos = None
    val_batches: Pos = None
    accelerator: Literal[ACCELERATORS] = None
    dropout: Prob = None


class SharedInit(Node):
    """A wider model that holds a narrow model's initialisation."""

    arch: Arch = None
    init_seed: Seed = None


class ModelSpec(Node):
    """A model to load (grafting.models.loading): ``source`` says from where, the other keys how."""

    name: Text = None
    source: Literal[names.MODEL_SOURCES] = None
    shipped: Text | None = None
    id: Text = None
    revision: Text = None
    path: Text = None
    package: Text = None  # gguf_package (grafting.models.gguf)
    gguf_file: Text = None
    install: Text = None
    dtype: Literal[names.MODEL_DTYPES] = None
    trust_remote_code: bool = None
    progress_bar: bool = None
    seed: Seed = None
    init_seed: Seed = None
    data_seed: Seed = None
    data_part: Literal[names.DATA_PARTS] = None
    tokenizer_vocab: Vocab = None
    arch: Arch = None
    pretrain: Pretrain = None
    shared_init: SharedInit = None


class Tiny(Node):
    """train.yaml's ``tiny``: architecture and pretraining recipe of the tiny pretrained pair."""

    pair_seed: Seed = None
    tokenizer_vocab: Vocab = None
    arch: Arch = None
    pretrain: Pretrain = None
