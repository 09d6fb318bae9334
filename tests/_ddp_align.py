"""Helper of tests/test_distributed.py: align Pre-T then Post-T of a tiny graft on N CPU processes.

    python tests/_ddp_align.py --devices 2 --batch-size 4 --out translators.safetensors

Two fits in one job (as stage=align does), the Trainer built from conf/trainer/ddp.yaml (or
default.yaml for one device) and the data from GraftingDataModule. Lightning's DDP launcher re-runs
this command once per extra process; rank 0 saves both translators with safetensors.
``--no-sync`` keeps DDP but replaces its gradient all-reduce with a no-op: the control run that the
test expects to differ.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"

import torch  # noqa: E402

VOCAB, SEQ_LEN, N_SAMPLES = 256, 16, 96
ARCH = dict(model_type="gpt_neox", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=128, vocab_size=VOCAB, max_position_embeddings=64, rotary_pct=0.25)


def _no_allreduce(state, bucket):
    """A DDP comm hook that returns each process's own gradients: no synchronisation."""
    future = torch.futures.Future()
    future.set_result(bucket.buffer())
    return future


def _callback_class():
    import lightning as L

    class NoAllReduce(L.Callback):
        """Registers :func:`_no_allreduce` on the DDP model (Lightning registers comm hooks on CUDA only)."""

        def on_train_start(self, trainer, pl_module) -> None:
            trainer.strategy.model.register_comm_hook(None, _no_allreduce)

    return NoAllReduce


def dataset(seed: int) -> list[dict[str, torch.Tensor]]:
    """Fixed-length random token rows: every process's batch has the same number of tokens, so the
    mean of per-process mean losses is the mean loss of the global batch."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (N_SAMPLES, SEQ_LEN), generator=g)
    return [{"input_ids": row, "labels": row.clone()} for row in ids]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--batch-size", type=int, required=True, help="per process")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--no-sync", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import lightning as L
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from safetensors.torch import save_file

    from grafting.data.datamodule import GraftingDataModule
    from grafting.graft.grafted import build_grafted
    from grafting.models.loading import build_random
    from grafting.modules.translator_align import PHASES, TranslatorAlignModule

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        overrides = ["trainer=ddp", f"trainer.devices={args.devices}"] if args.devices > 1 else []
        trainer_cfg = compose(config_name="train", overrides=overrides).trainer

    L.seed_everything(args.seed, workers=True)
    host, donor = build_random(ARCH, 1), build_random(ARCH, 0)
    grafted = build_grafted(host, donor, layer=1, dest=1, translator="linear")
    data = GraftingDataModule(dataset(args.seed), None, pad_id=0, batch_size=args.batch_size, seed=args.seed)
    _NoAllReduce = _callback_class()
    saved = {}
    for phase in PHASES:
        module = TranslatorAlignModule(grafted, host, donor, 1, phase, "residual", "mse", lr=args.lr)
        extra = {"callbacks": [_NoAllReduce()]} if args.no_sync else {}
        trainer = instantiate(trainer_cfg, accelerator="cpu", max_steps=args.steps, logger=False,
                              enable_checkpointing=False, limit_val_batches=0, **extra)
        trainer.fit(module, datamodule=data)
        saved.update({f"{phase}.{k}": v.detach().cpu().clone() for k, v in module.translator.state_dict().items()})
        saved[f"{phase}.world_size"] = torch.tensor(trainer.world_size)
    if trainer.is_global_zero:
        save_file(saved, args.out)


if __name__ == "__main__":
    main()
