"""(f) Memory of one alignment step: the framework's path against full forwards with autograd on.

The framework runs every frozen model under ``no_grad`` and stops its forwards early, then applies the
trainable translator to the captured activations. The simple path runs the grafted model in full
with autograd on (so every activation after the translator is kept for backward) and takes the
target from a full forward of the reference model with ``output_hidden_states``.

Two figures per path: the bytes autograd saves for backward (exact, counted by
``torch.autograd.graph.saved_tensors_hooks``) and the peak memory of the step (see ``common.peak_memory``).
"""

from __future__ import annotations

import torch

from benchmarks.common import Settings, peak_memory, random_batch, random_model, ratio
from benchmarks.result import Measurement
from grafting.graft.grafted import build_grafted, graft_of
from grafting.modules.translator_align import TranslatorAlignModule

MiB = 2**20


def saved_bytes(step) -> int:
    """Bytes of every tensor autograd keeps for backward during ``step()`` (each storage counted once)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values())


def simple_loss(module: TranslatorAlignModule, batch: dict) -> torch.Tensor:
    """Full forwards: prediction from the grafted model with autograd on, target from output_hidden_states."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    captured = {}
    handle = module.translator.register_forward_hook(lambda _m, _a, out: captured.__setitem__("pred", out))
    try:
        module.grafted(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        handle.remove()
    reference, index = (module.donor, module.layer) if module.phase == "pre" else (module.host, module.dest + 1)
    with torch.no_grad():
        target = reference(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                           use_cache=False).hidden_states[index]
    return module.distance(captured["pred"], target, mask)


def run(s: Settings) -> list[Measurement]:
    donor = random_model(s.small_model, s.device, seed=0)
    host = random_model(s.small_model, s.device, seed=1)
    layer = 0  # an early graft: everything after it is what the simple path keeps
    grafted = build_grafted(host, donor, layer, layer, "linear").to(s.device)
    batch = random_batch(host, *((4, 32) if s.quick else (8, 256)), s.device)
    out = []
    for phase in ("pre", "post"):
        module = TranslatorAlignModule(grafted, host, donor, layer, phase)
        assert graft_of(grafted)[0] == layer
        figures = {}
        for label, loss_fn in (("framework", lambda m=module: m.loss(batch)),
                               ("simple", lambda m=module: simple_loss(m, batch))):
            def step(loss_fn=loss_fn, translator=module.translator):
                loss_fn().backward()
                translator.zero_grad(set_to_none=True)

            step()  # warm-up: allocator caches, lazy buffers
            figures[label] = (saved_bytes(step), peak_memory(step, s.device)[0])
        (fw_saved, fw_peak), (simple_saved, simple_peak) = figures["framework"], figures["simple"]
        out.append(Measurement(
            "f", f"alignment step, phase {phase}, graft at block {layer}, {s.small_model}, "
                 f"{tuple(batch['input_ids'].shape)} tokens: peak memory", "framework", fw_peak / MiB,
            "full forwards, autograd on", simple_peak / MiB, unit="MiB", ratio=ratio(simple_peak, fw_peak),
            extra={"saved_for_backward_MiB": fw_saved / MiB, "simple_saved_for_backward_MiB": simple_saved / MiB,
                   "saved_ratio": ratio(simple_saved, fw_saved)}))
    return out
