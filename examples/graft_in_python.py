"""Graft a fine-tuned block from Python, no Hydra config: a notebook session as a script.

    python examples/graft_in_python.py            # smoke size: tiny random models, a few steps (under a minute)
    python examples/graft_in_python.py --pair     # the shipped tiny pretrained pair, the project's recipe

Each ``# %%`` cell is one step of the layer-grafting method (docs/METHODS.md §1), then a SkillPack
and a transplant sweep on the same models.
"""

# %% Setup
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from grafting import api

parser = argparse.ArgumentParser()
parser.add_argument("--pair", action="store_true", help="the shipped tiny pair and full-size steps")
args = parser.parse_args()
torch.manual_seed(0)
out = Path(tempfile.mkdtemp(prefix="graft-in-python-"))

# %% Load a host and a donor (model specs are plain dicts; grafting/presets/models/*.yaml are the presets)
if args.pair:
    host, donor, tokenizer = api.load_pair("tiny-host", "tiny-vanilla")
    ft, layer = api.FinetuneConfig(), 2
    align_cfg, points = api.AlignConfig(), 200
else:
    arch = {"model_type": "gpt_neox", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 64, "vocab_size": 4096, "max_position_embeddings": 128, "rotary_pct": 0.25}
    host, donor, tokenizer = api.load_pair({"source": "random", "seed": 1, "arch": arch},
                                           {"source": "random", "seed": 0, "arch": arch})
    ft, layer = api.FinetuneConfig(steps=4, batch_size=8), 1
    align_cfg = api.AlignConfig(steps=4, val_check_interval=2, limit_val_batches=1)
    points = 8
task = api.ModularAddition(operand_max=20, test_size=16) if not args.pair else api.ModularAddition()

# %% Fine-tune the donor's block `layer` on modular addition (LoRA)
tuned = api.finetune_block(donor, layer, api.task_data(task, tokenizer, ft.batch_size, seed=0), ft)
api.save_tuned_block(tuned.tuned_block(), out / "tuned_block", layer=layer, method=ft.method, base=donor)

# %% Graft: host[:j] -> Pre-T -> donor block -> Post-T -> host[j+1:], translators start as the identity
grafted = api.build_graft(host, donor, layer=layer, dest=layer)

# %% Align Pre-T then Post-T on general text (strategy "original": around the vanilla block) ...
text = api.DataSpec(kind="text", batch_size=8, seq_len=32, max_chunks=None if args.pair else 64)
history = api.align(grafted, host, donor, api.build_datamodule(text, task, tokenizer, seed=0), align_cfg)
print({phase: round(h["val_loss_after"], 4) for phase, h in history.items()})

# %% ... then swap the tuned block in, and save / reload the graft
api.swap_donor_block_(grafted, tuned.tuned_block())
api.save_graft(grafted, out / "graft")
reloaded = api.load_graft(host, donor, out / "graft")
ids = torch.tensor([[1, 2, 3, 4]])
with torch.no_grad():
    torch.testing.assert_close(reloaded(ids).logits, grafted(ids).logits, rtol=0, atol=0)

# %% Evaluate: task metrics (f_H, f_S, fact) and language metrics against the host
settings = api.EvalSettings(task_points=points, max_new_tokens=6,
                            language=api.LanguageSettings(n_texts=2, max_new_tokens=8, kl_texts=2, mlm_model=None))
scores = api.evaluate({"Tuned": tuned.tuned_model(), "Grafted": grafted, "Host": host}, tokenizer, host, task,
                      settings=settings)
for name, s in scores.items():
    print(f"{name:8s} f_H={s['f_H']:.3f} f_S={s['f_S']:.3f} fact={s['fact']:.3f} kl_host={s['kl_host']:.4f}")

# %% A SkillPack: the donor's fine-tuning delta, compressed, saved, and applied to the donor again
pack = api.build_skillpack(donor, tuned.tuned_model())
api.save_skillpack(pack, donor, out / "pack")
with api.apply_skillpacks(donor, api.load_skillpack(out / "pack", base=donor)) as patched:
    print("with the pack:", api.evaluate({"Donor+pack": patched}, tokenizer, donor, task, settings=settings,
                                         language=False)["Donor+pack"]["fact"])

# %% A transplant sweep: copy the k modules whose activations differ most from the tuned donor into the donor
def accuracy(model: torch.nn.Module) -> float:
    return api.evaluate({"m": model}, tokenizer, model, task, settings=settings, language=False)["m"]["fact"]


prompts = [ex.prompt for ex in task.split("train")[:8]]
rows = api.transplant_sweep(tuned.tuned_model(), donor, prompts, tokenizer, accuracy, ks=[1, 4],
                            selections=("top", "random"), seeds=(0,))
for row in rows:
    print(f"{row['selection']:6s} k={row['k']}: fact={row['score']:.3f} recovery={row['recovery']}")
print(f"artifacts in {out}")
