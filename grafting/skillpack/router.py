"""The ``learned`` router's classifier: a small per-input classifier that picks one pack per prompt (top-1).

Features are the base target's last hidden state, mean-pooled over the prompt's tokens. The
classifier is logistic regression (``hidden=0``) or a one-hidden-layer MLP, trained with torch
on standardised features. The routers (this one among them) and routed generation are in
:mod:`grafting.skillpack.routers`.

Saved as ``router.safetensors`` (weights, feature mean/std) plus ``router.json`` (pack names,
sizes, the base fingerprint and the weights file's sha256). Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import safetensors.torch
import torch
from torch import Tensor, nn

from grafting.artifacts import atomic_dir, write_json_atomic
from grafting.errors import ArtifactError
from grafting.generation import eval_mode, padding_side

FORMAT = "grafting-router"
WEIGHTS = "router.safetensors"
MANIFEST = "router.json"


@torch.no_grad()
def hidden_batches(model: nn.Module, tokenizer, prompts: Sequence[str], layer: int = -1,
                   batch_size: int = 64) -> Iterator[tuple[Tensor, Tensor]]:
    """``(hidden, mask)`` per batch of prompts, right-padded: hidden state ``layer`` (float32, 0 = the input
    embeddings) and the boolean mask of each prompt's real tokens. What the routers read of a prompt."""
    device = next(model.parameters()).device
    with eval_mode(model), padding_side(tokenizer, "right"):
        for start in range(0, len(prompts), batch_size):
            enc = tokenizer(list(prompts[start : start + batch_size]), return_tensors="pt", padding=True).to(device)
            hidden = model(**enc, output_hidden_states=True, use_cache=False).hidden_states[layer].float()
            yield hidden, enc["attention_mask"].bool()


def prompt_features(model: nn.Module, tokenizer, prompts: Sequence[str], batch_size: int = 64) -> Tensor:
    """(N, hidden) float32: the last hidden state mean-pooled over each prompt's real tokens."""
    rows = []
    for hidden, mask in hidden_batches(model, tokenizer, prompts, -1, batch_size):
        weights = mask.unsqueeze(-1).float()
        rows.append(((hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)).cpu())
    return torch.cat(rows) if rows else torch.zeros(0, 0)


class PackRouter(nn.Module):
    """Standardise -> (Linear -> ReLU)? -> Linear over ``len(names)`` packs."""

    def __init__(self, names: Sequence[str], dim: int, hidden: int = 0) -> None:
        super().__init__()
        if len(names) < 1 or len(set(names)) != len(names):
            raise ValueError(f"router needs distinct pack names, got {list(names)}")
        self.names, self.dim, self.hidden = list(names), int(dim), int(hidden)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        layers: list[nn.Module] = [nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, len(names))] if hidden \
            else [nn.Linear(dim, len(names))]
        self.net = nn.Sequential(*layers)
        self.base_fingerprint: str | None = None

    def forward(self, features: Tensor) -> Tensor:
        return self.net((features.float() - self.mean) / self.std)

    @torch.no_grad()
    def predict(self, features: Tensor) -> list[int]:
        """Top-1 pack index per row."""
        return self(features).argmax(-1).tolist()

    def fit(self, features: Tensor, labels: Sequence[int], epochs: int = 300, lr: float = 0.05,
            weight_decay: float = 1e-3, seed: int = 0) -> dict[str, float]:
        """Full-batch AdamW on cross-entropy; returns the final train loss and accuracy."""
        y = torch.as_tensor(list(labels), dtype=torch.long)
        if features.shape[0] != y.numel() or features.shape[1] != self.dim:
            raise ValueError(f"features {tuple(features.shape)} do not match {y.numel()} labels x dim {self.dim}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= len(self.names)):
            raise ValueError(f"labels must be in [0, {len(self.names)})")
        self.mean.copy_(features.float().mean(0))
        self.std.copy_(features.float().std(0, unbiased=False).clamp_min(1e-6))
        with torch.random.fork_rng():
            torch.manual_seed(seed)  # a reproducible init, without disturbing the caller's RNG
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()
        opt = torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=weight_decay)
        self.train()
        loss = torch.tensor(0.0)
        for _ in range(epochs):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(self(features), y)
            loss.backward()
            opt.step()
        self.eval()
        acc = sum(p == t for p, t in zip(self.predict(features), y.tolist(), strict=True)) / max(1, y.numel())
        return {"loss": float(loss.detach()), "accuracy": acc}

    # ------------------------------------------------------------------------------------- save / load

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Writes ``router.safetensors`` + ``router.json`` into the folder ``path`` (atomically)."""
        with atomic_dir(path, overwrite=overwrite) as tmp:
            tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
            data = safetensors.torch.save(tensors, metadata={"format": FORMAT})
            (tmp / WEIGHTS).write_bytes(data)
            write_json_atomic(tmp / MANIFEST, {
                "format": FORMAT, "packs": self.names, "dim": self.dim, "hidden": self.hidden,
                "base_fingerprint": self.base_fingerprint,
                "feature": "mean-pooled last hidden state of the base target over the prompt tokens",
                "files": {WEIGHTS: hashlib.sha256(data).hexdigest()}})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> PackRouter:
        """Reads a router folder, checking the weights' sha256 against ``router.json``."""
        path = Path(path)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError) as err:
            raise ArtifactError(f"{path / MANIFEST}: not a readable router manifest ({err})") from err
        if manifest.get("format") != FORMAT:
            raise ArtifactError(f"{path / MANIFEST}: not a {FORMAT} manifest")
        data = (path / WEIGHTS).read_bytes()
        if hashlib.sha256(data).hexdigest() != manifest["files"][WEIGHTS]:
            raise ArtifactError(f"{path / WEIGHTS}: sha256 mismatch (corrupted or altered)")
        router = cls(manifest["packs"], manifest["dim"], manifest["hidden"])
        router.load_state_dict(safetensors.torch.load(data))
        router.base_fingerprint = manifest.get("base_fingerprint")
        return router.eval()


def train_router(model: nn.Module, tokenizer, prompts_by_pack: Mapping[str, Sequence[str]], hidden: int = 0,
                 epochs: int = 300, lr: float = 0.05, seed: int = 0, batch_size: int = 64,
                 fingerprint: str | None = None) -> tuple[PackRouter, dict[str, float]]:
    """Fits a router on the base model's features of each pack's prompts; label = the pack they belong to."""
    names = list(prompts_by_pack)
    prompts = [p for name in names for p in prompts_by_pack[name]]
    labels = [i for i, name in enumerate(names) for _ in prompts_by_pack[name]]
    feats = prompt_features(model, tokenizer, prompts, batch_size)
    router = PackRouter(names, feats.shape[1], hidden)
    stats = router.fit(feats, labels, epochs=epochs, lr=lr, seed=seed)
    router.base_fingerprint = fingerprint
    return router, stats
