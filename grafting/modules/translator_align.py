"""LightningModule that aligns one translator of a grafted model (the paper's two phases).

- Phase ``pre``: only Pre-T trains. Its output on the host's residual entering block j is matched
  to the donor's residual entering block i (same tokens).
- Phase ``post``: only Post-T trains (Pre-T and everything before it are frozen). The graft's
  output is matched to the host's residual entering block j+1.

Residual targets come from truncated forwards: no host block after j and no donor block from i on
is computed. The frozen parts run under ``no_grad``; the trainable translator is applied to the
captured activations, so no activation of a frozen model is ever kept for backward.
With ``loss.kind=logits`` the phases instead match output logits (grafted vs donor, then grafted
vs host), which needs full forwards. With ``loss.reading=logit_lens`` a residual loss compares the
two streams decoded by the phase's reference model (donor for Pre-T, host for Post-T) through its
final norm and unembedding.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import lightning as L
import torch
from torch import nn

from grafting import surgery
from grafting.callbacks import TrainableOnlyCheckpoint
from grafting.errors import ConfigError
from grafting.graft.block import graft_of, span_of
from grafting.graft.losses import KINDS, READINGS, get_distance, lens_kl
from grafting.graft.translators import CLOSED_FORMS
from grafting.threads import run_all, single_op_threads

PHASES = ("pre", "post")


def _hidden_arg(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


class PrefixCache:
    """The residual entering the graft (host blocks before j on a batch: frozen), kept by Pre-T for Post-T.

    The two phases see the same batches, so Post-T runs only the graft and the host's block j on the kept
    residual instead of the host blocks before j again: the same blocks on the same input, bitwise the same
    numbers. Bounded by ``max_bytes``; a batch that is not kept is computed as before.
    """

    def __init__(self, max_bytes: int = 512 * 2**20):
        self.max_bytes, self.used = max_bytes, 0
        self.entries: dict[bytes, torch.Tensor] = {}

    @staticmethod
    def key(ids: torch.Tensor, mask: torch.Tensor | None) -> bytes:
        digest = hashlib.blake2b(digest_size=16)
        for t in (ids, mask if mask is not None else torch.ones_like(ids)):
            digest.update(repr((tuple(t.shape), t.dtype)).encode())
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        return digest.digest()

    def get(self, key: bytes) -> torch.Tensor | None:
        return self.entries.get(key)

    def put(self, key: bytes, hidden: torch.Tensor) -> None:
        size = hidden.numel() * hidden.element_size()
        if key not in self.entries and self.used + size <= self.max_bytes:
            self.entries[key] = hidden.detach()
            self.used += size


class TranslatorAlignModule(TrainableOnlyCheckpoint, L.LightningModule):
    """Trains Pre-T (``phase='pre'``) or Post-T (``phase='post'``) of ``grafted``; nothing else moves."""

    def __init__(self, grafted: nn.Module, host: nn.Module, donor: nn.Module, layer: int, phase: str,
                 kind: str = "residual", distance: str = "mse", lr: float = 3e-3, weight_decay: float = 0.0,
                 temperature: float = 1.0, reading: str = "hidden", prefix_cache: PrefixCache | None = None):
        super().__init__()
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        if kind not in KINDS:
            raise ConfigError("loss.kind", f"unknown loss kind {kind!r}; allowed: {', '.join(KINDS)}.")
        if reading not in READINGS:
            raise ConfigError("loss.reading", f"unknown reading {reading!r}; allowed: {', '.join(READINGS)}.")
        self.reading = reading
        self.grafted, self.host, self.donor = grafted, host, donor
        self.layer, self.phase, self.kind = layer, phase, kind
        self.distance = get_distance("kl" if kind == "logits" else distance, temperature)
        # the logit-lens KL runs chunked (grafting.graft.losses.lens_kl): same numbers, no positions x vocab tensors
        self.fused_lens = kind == "residual" and reading == "logit_lens" and distance == "kl"
        self.lr, self.weight_decay, self.temperature = lr, weight_decay, temperature
        self.dest, self.graft = graft_of(grafted)
        for model in (grafted, host, donor):
            model.requires_grad_(False)
            model.eval()  # frozen models: dropout off
        self.translator = self.graft.pre_translator if phase == "pre" else self.graft.post_translator
        # shared by the two phases of one alignment (alignment.align_graft); nothing to share when j = 0
        self.prefix_cache = prefix_cache if self.dest > 0 else None
        self.translator.requires_grad_(True)
        self.translator.train()

    # -- targets and predictions --------------------------------------------------------------

    @property
    def reference(self) -> nn.Module:
        """The model whose stream this phase matches: the donor for Pre-T, the host for Post-T."""
        return self.donor if self.phase == "pre" else self.host

    def _residual_pre(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = PrefixCache.key(ids, mask) if self.prefix_cache is not None else None
        host_in = self.prefix_cache.get(key) if key is not None else None  # a validation batch seen before
        with torch.no_grad():
            # the two frozen forwards are independent: side by side on the job's threads
            tasks = [lambda: surgery.residual_before(self.donor, ids, self.layer, mask)]
            if host_in is None:
                tasks.append(lambda: surgery.residual_before(self.grafted, ids, self.dest, mask))  # = host's prefix
            target, *computed = run_all(tasks, None if ids.device.type == "cpu" else 1)
        if computed:
            host_in = computed[0]
            if key is not None:
                self.prefix_cache.put(key, host_in)
        return host_in, target

    def translator_io(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(translator input, target stream)`` of a batch: what a least-squares fit of the translator needs."""
        if self.kind != "residual":
            raise ConfigError("align.solver", "a least-squares translator needs loss=residual.")
        ids, mask = batch["input_ids"], batch["attention_mask"]
        with single_op_threads():
            return (self._residual_pre if self.phase == "pre" else self._residual_post)(ids, mask)

    def _residual_post(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured: dict[str, Any] = {}
        kept = self.prefix_cache.get(PrefixCache.key(ids, mask)) if self.prefix_cache is not None else None

        me = threading.get_ident()  # hooks fire in whichever thread runs the module: keep this call's only

        def on_graft(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            if threading.get_ident() == me:
                captured["args"], captured["kwargs"] = args[1:], dict(kwargs)
                captured["hidden"] = _hidden_arg(args, kwargs)

        def on_post(_m: nn.Module, args: tuple) -> None:
            if threading.get_ident() == me:
                captured["block_out"] = args[0]

        handles = [self.graft.post_translator.register_forward_pre_hook(on_post)]
        try:
            with torch.no_grad():
                if kept is not None:  # the host prefix from Pre-T: only the graft runs, on the call block 0 got
                    _, args, kwargs = surgery.block_inputs(self.grafted, ids, 0, mask)
                    kwargs.pop("hidden_states", None)
                    captured.update(hidden=kept, args=args, kwargs=kwargs)
                    # the graft and the host's own blocks read the same input: side by side (the graft first:
                    # run_all runs it in this thread, where on_post keeps its block output)
                    _, target = run_all([lambda: self.graft(kept, *args, **kwargs),
                                         lambda: self._host_blocks(kept, args, kwargs)],
                                        None if ids.device.type == "cpu" else 1)
                else:
                    handles.append(self.graft.register_forward_pre_hook(on_graft, with_kwargs=True))
                    surgery.residual_before(self.grafted, ids, self.dest + 1, mask)
                    target = self._host_blocks(captured["hidden"], captured["args"], captured["kwargs"])
        finally:
            for h in handles:
                h.remove()
        return captured["block_out"], target

    def _host_blocks(self, hidden: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
        """The host's residual entering block j+span: its blocks j..j+span-1 on the graft's input, called with
        the same masks and position embeddings the graft receives."""
        for host_block in surgery.get_blocks(self.host)[self.dest:self.dest + span_of(self.graft)]:
            hidden = host_block(hidden, *args, **kwargs)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        return hidden

    def _logits(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        reference = self.donor if self.phase == "pre" else self.host
        with torch.no_grad():
            target = reference(input_ids=ids, attention_mask=mask, use_cache=False).logits
        pred = self.grafted(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return pred, target

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The phase's loss on ``batch``; its independent parts run side by side, each op on one thread
        (grafting/threads.py), so the numbers do not depend on the job's thread count."""
        with single_op_threads():
            return self._loss(batch)

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if self.kind == "logits":
            pred, target = self._logits(ids, mask)
            return self.distance(pred, target, mask)
        source, target = self.translator_io(batch)
        pred = self.translator(source)
        unembed = self.reference.get_output_embeddings()
        if self.fused_lens and type(unembed) is nn.Linear:
            norm = surgery.final_norm(self.reference)
            with torch.no_grad():
                target = norm(target)
            return lens_kl(norm(pred), target, unembed, mask, self.temperature)
        if self.reading == "logit_lens":
            pred = surgery.logit_lens(self.reference, pred)
            with torch.no_grad():
                target = surgery.logit_lens(self.reference, target)
        return self.distance(pred, target, mask)

    # -- closed form ---------------------------------------------------------------------------

    @torch.no_grad()
    def captured(self, batches) -> tuple[torch.Tensor, torch.Tensor]:
        """Translator inputs and targets at every non-pad position of ``batches``, as ``(N, d)`` rows."""
        device = next(self.translator.parameters()).device
        xs, ys = [], []
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            x, y = self.translator_io(batch)
            keep = batch["attention_mask"].bool()
            xs.append(x[keep].float().cpu())
            ys.append(y[keep].float().cpu())
        return torch.cat(xs), torch.cat(ys)

    def fit_least_squares_(self, batches, solver: str = "lstsq") -> None:
        """Set the translator to a closed form fitted on the residuals captured from ``batches``:
        the MSE optimum (``lstsq``) or the best scaled rotation (``procrustes``)."""
        weight, bias = CLOSED_FORMS[solver](*self.captured(batches))
        device = next(self.translator.parameters()).device
        self.translator.set_map_(weight.to(device), bias.to(device))

    # -- Lightning hooks -----------------------------------------------------------------------

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log(f"align/{self.phase}/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.log(f"align/{self.phase}/val_loss", self.loss(batch), sync_dist=True)

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        with single_op_threads():  # as the forward: one thread per op, whatever the job's thread count
            super().backward(loss, *args, **kwargs)

    def on_train_start(self) -> None:
        # Lightning puts the whole module in train mode; the frozen models must stay in eval mode.
        for model in (self.grafted, self.host, self.donor):
            model.eval()
        self.translator.train()

    def configure_optimizers(self):
        return torch.optim.Adam(self.translator.parameters(), lr=self.lr, weight_decay=self.weight_decay)
