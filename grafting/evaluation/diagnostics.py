"""Where a grafted skill is lost: the tuned block's task direction through Post-T and the host's later blocks.

Four models are run on the same task prompts (the evaluation's test prompts, unpadded) and read at the
last prompt position, the one that predicts the answer's first token:

- ``Tuned`` / ``Vanilla``: the donor with / without the tuned block ``i`` (``graft.layer``);
- ``Grafted`` / ``VanillaGraft``: the host with the graft at ``j`` (``graft.dest``), the same translators
  around the tuned / vanilla block.

Per block ``k`` (the residual stream *after* block ``k``; for the graft at ``j`` that is after Post-T):

- ``Δ_d(k)`` = mean over prompts of ``Tuned − Vanilla`` (donor basis), ``Δ_g(k)`` = ``Grafted − VanillaGraft``
  (host basis); both are exactly 0 before the graft point, since the models agree there;
- ``‖Δ(k)‖`` relative to the mean residual norm of the vanilla model of the pair at ``k``;
- ``cos(Δ(k), Δ(origin))``: does the direction stay the same one in later blocks;
- at the graft point, ``cos(Δ_g(j), W_post Δ_d(i))`` with ``W_post Δ = Post(Δ) − Post(0)`` (the linear part
  of Post-T): does the graft write the donor's direction, mapped into the host's basis;
- a logit-lens reading (the host's final norm and unembedding for graft streams, the donor's for donor
  streams): the log-probability of the answer's first token and its difference tuned − vanilla.

Where are *facts* lost? :func:`half_graft_facts` scores the answer digit teacher-forced (the prompt and
the answer's format given) for the tuned donor, the graft, and each half of the graft on its own:

- ``input_half``: the host up to ``j``, Pre-T, then the tuned donor from block ``i`` on (its own head):
  does Pre-T hand the tuned block what it needs (e.g. which key was asked)?
- ``output_half``: the tuned donor up to and through block ``i``, Post-T, then the host from ``j + 1`` on:
  do Post-T and the host's later blocks read what the tuned block wrote?

No Hydra here: ``grafting/stages/diagnose.py`` loads a pipeline run and calls :func:`diagnose`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from grafting import surgery
from grafting.data.modular import ModularAddition
from grafting.graft.block import graft_of

__all__ = ["answer_token_id", "block_residuals", "diagnose", "fact_items", "half_graft_facts", "lens_logprobs",
           "linear_part", "plot_diagnostics", "task_prompts"]


def task_prompts(task: ModularAddition, tokenizer, n_prompts: int) -> list[torch.Tensor]:
    """Token ids of the first ``n_prompts`` test prompts, tokenised as the evaluation tokenises them."""
    examples = task.split("test")[:n_prompts]
    return [torch.tensor(tokenizer(ex.prompt)["input_ids"], dtype=torch.long) for ex in examples]


def answer_token_id(task: ModularAddition, tokenizer) -> int:
    """The answer's first token (`` The``), tokenised as the fine-tuning data tokenises the completion."""
    ids = tokenizer(task.example(0, 0).completion, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"the answer template {task.answer_template!r} tokenises to nothing")
    return int(ids[0])


def fact_items(task: ModularAddition, tokenizer, n_prompts: int) -> list[tuple[torch.Tensor, int]]:
    """``(prompt + answer ids, answer token)`` of the first ``n_prompts`` test items: the answer's last token
    (the digit) is what the position before it must predict, teacher-forced."""
    items = []
    for ex in task.split("test")[:n_prompts]:
        prompt = tokenizer(ex.prompt)["input_ids"]
        answer = tokenizer(ex.completion, add_special_tokens=False)["input_ids"]
        items.append((torch.tensor(prompt + answer, dtype=torch.long), int(answer[-1])))
    return items


def _rows_by_length(sequences: Sequence[torch.Tensor]) -> dict[int, list[int]]:
    """Indices of ``sequences`` grouped by length: each group runs as one unpadded batch."""
    groups: dict[int, list[int]] = defaultdict(list)
    for n, ids in enumerate(sequences):
        groups[len(ids)].append(n)
    return groups


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def block_residuals(model: nn.Module, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(n_blocks, n_prompts, d)``: the residual stream after each block at each prompt's last position.

    Read with forward hooks on the blocks themselves, so a :class:`~grafting.graft.block.GraftedBlock`
    gives its output after Post-T. Prompts of equal length run together, unpadded: no mask or position
    offsets can make a row differ from its own single forward.
    """
    blocks = surgery.get_blocks(model)
    device = _device(model)
    by_length = _rows_by_length(prompts)
    out = torch.zeros(len(blocks), len(prompts), surgery.hidden_size(model), dtype=torch.float32)
    captured: dict[int, torch.Tensor] = {}

    def hook_for(k: int):
        def hook(_module, _args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            captured[k] = hidden[:, -1].float().cpu()

        return hook

    handles = [block.register_forward_hook(hook_for(k)) for k, block in enumerate(blocks)]
    was_training = model.training
    model.eval()
    try:
        for rows in by_length.values():
            ids = torch.stack([prompts[n] for n in rows]).to(device)
            captured.clear()
            model(input_ids=ids, use_cache=False)
            for k in range(len(blocks)):
                out[k, rows] = captured[k]
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return out


@torch.no_grad()
def lens_logprobs(model: nn.Module, residuals: torch.Tensor, token_id: int) -> torch.Tensor:
    """``(n_blocks, n_prompts)``: log p(``token_id``) of each residual read through ``model``'s logit lens."""
    head = model.get_output_embeddings()
    logits = surgery.logit_lens(model, residuals.to(device=head.weight.device, dtype=head.weight.dtype))
    return torch.log_softmax(logits.float(), dim=-1)[..., token_id].cpu()


@torch.no_grad()
def linear_part(translator: nn.Module, delta: torch.Tensor) -> torch.Tensor:
    """``T(Δ) − T(0)``: the image of a direction under a translator's linear part (any translator kind)."""
    device = next(translator.parameters()).device
    x = delta.to(device=device, dtype=torch.float32).reshape(1, -1)
    return (translator(x) - translator(torch.zeros_like(x))).reshape(-1).cpu()


def _cos(a: torch.Tensor, b: torch.Tensor) -> float | None:
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return None
    return float((a @ b) / (na * nb))


def _pair(tuned: torch.Tensor, vanilla: torch.Tensor, lp_tuned: torch.Tensor, lp_vanilla: torch.Tensor,
          origin: int, names: tuple[str, str]) -> dict[str, Any]:
    """Per-block lists for one pair of models (residuals ``(L, N, d)``, lens log-probs ``(L, N)``)."""
    deltas = tuned - vanilla  # (L, N, d)
    mean_delta = deltas.mean(dim=1)  # (L, d)
    ref_norm = vanilla.norm(dim=-1).mean(dim=1)  # (L,)
    delta_norm = mean_delta.norm(dim=-1)
    return {
        "block": list(range(tuned.shape[0])),
        "residual_norm": {names[0]: tuned.norm(dim=-1).mean(dim=1).tolist(), names[1]: ref_norm.tolist()},
        "delta_norm": delta_norm.tolist(),
        "delta_rel": (delta_norm / ref_norm).tolist(),
        "delta_rel_per_prompt": (deltas.norm(dim=-1).mean(dim=1) / ref_norm).tolist(),
        "delta_cos_to_origin": [_cos(mean_delta[k], mean_delta[origin]) for k in range(tuned.shape[0])],
        "lens_logprob": {names[0]: lp_tuned.mean(dim=1).tolist(), names[1]: lp_vanilla.mean(dim=1).tolist()},
        "lens_logprob_diff": (lp_tuned - lp_vanilla).mean(dim=1).tolist(),
    }


def diagnose(tuned: nn.Module, vanilla: nn.Module, grafted: nn.Module, vanilla_graft: nn.Module,
             prompts: Sequence[torch.Tensor], answer_token: int, layer: int) -> dict[str, Any]:
    """The per-block diagnostics of one graft (see the module docstring), as plain JSON-ready data.

    Args:
        tuned, vanilla: the donor with the tuned block at ``layer``, and the donor itself.
        grafted, vanilla_graft: the host with the graft (tuned block), and the same translators around
            the vanilla block; the graft's position ``dest`` is read from the model.
        prompts: token ids of the task prompts (see :func:`task_prompts`).
        answer_token: the token whose logit-lens log-probability is read (see :func:`answer_token_id`).
        layer: the donor block ``i`` that was tuned.
    """
    dest, graft = graft_of(grafted)
    if graft_of(vanilla_graft)[0] != dest:
        raise ValueError("grafted and vanilla_graft hold their graft at different positions")
    res = {name: block_residuals(model, prompts) for name, model in
           (("Tuned", tuned), ("Vanilla", vanilla), ("Grafted", grafted), ("VanillaGraft", vanilla_graft))}
    lp = {name: lens_logprobs(vanilla if name in ("Tuned", "Vanilla") else vanilla_graft, r, answer_token)
          for name, r in res.items()}
    donor = _pair(res["Tuned"], res["Vanilla"], lp["Tuned"], lp["Vanilla"], layer, ("Tuned", "Vanilla"))
    host = _pair(res["Grafted"], res["VanillaGraft"], lp["Grafted"], lp["VanillaGraft"], dest,
                 ("Grafted", "VanillaGraft"))
    delta_d = (res["Tuned"][layer] - res["Vanilla"][layer]).mean(dim=0)
    delta_g = (res["Grafted"][dest] - res["VanillaGraft"][dest]).mean(dim=0)
    mapped = linear_part(graft.post_translator, delta_d)
    host_norm = host["residual_norm"]["VanillaGraft"][dest]
    post_t = {
        "cos_graft_vs_mapped_donor": _cos(delta_g, mapped),
        "donor_delta_rel": donor["delta_rel"][layer],
        "mapped_donor_delta_rel": float(mapped.norm()) / host_norm,
        "graft_delta_rel": host["delta_rel"][dest],
        "graft_over_mapped_norm": float(delta_g.norm() / mapped.norm()) if mapped.norm() > 0 else None,
    }
    summary = {
        "donor_lens_logprob_diff_at_layer": donor["lens_logprob_diff"][layer],
        "donor_lens_logprob_diff_final": donor["lens_logprob_diff"][-1],
        "graft_lens_logprob_diff_at_dest": host["lens_logprob_diff"][dest],
        "graft_lens_logprob_diff_final": host["lens_logprob_diff"][-1],
        "graft_delta_rel_final": host["delta_rel"][-1],
        "graft_delta_cos_final_to_dest": host["delta_cos_to_origin"][-1],
    }
    return {"layer": layer, "dest": dest, "n_prompts": len(prompts), "answer_token_id": answer_token,
            "donor": donor, "graft": host, "post_t": post_t, "summary": summary}


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def _digit_hits(run, items: Sequence[tuple[torch.Tensor, int]]) -> float:
    """Share of ``items`` whose answer token is the argmax at the position before it; ``run(ids)`` -> logits."""
    by_length = _rows_by_length([ids for ids, _ in items])
    hits = 0
    for rows in by_length.values():
        ids = torch.stack([items[n][0] for n in rows])
        predicted = run(ids)[:, -2].argmax(dim=-1).cpu()
        hits += sum(int(p) == items[n][1] for p, n in zip(predicted.tolist(), rows, strict=True))
    return hits / len(items) if items else float("nan")


def half_graft_facts(tuned: nn.Module, grafted: nn.Module, vanilla_graft: nn.Module,
                     items: Sequence[tuple[torch.Tensor, int]], layer: int) -> dict[str, float]:
    """Teacher-forced fact of the tuned donor, the graft, its vanilla-block control and each half of the
    graft (see the module docstring), on ``items`` from :func:`fact_items`."""
    dest, graft = graft_of(grafted)
    host_slot = surgery.get_blocks(grafted)[dest]
    donor_blocks = surgery.get_blocks(tuned)
    donor_in, donor_out = donor_blocks[layer], donor_blocks[layer + len(graft.following)]

    def logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        return model(input_ids=ids.to(_device(model)), use_cache=False).logits.float()

    def with_hooks(model: nn.Module, hooks: list[tuple[nn.Module, str, Any]], ids: torch.Tensor):
        handles = []
        try:
            for module, kind, fn in hooks:
                if kind == "pre":
                    handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
                else:
                    handles.append(module.register_forward_hook(fn))
            return logits(model, ids)
        finally:
            for h in handles:
                h.remove()

    def input_half(ids: torch.Tensor) -> torch.Tensor:
        seen: dict[str, torch.Tensor] = {}

        def capture(_m, args, kwargs):
            seen["h"] = args[0]

        with_hooks(grafted, [(host_slot, "pre", capture)], ids)
        fed = graft.pre_translator(seen["h"])

        def feed(_m, args, kwargs):
            return (fed.to(args[0].dtype), *args[1:]), kwargs

        return with_hooks(tuned, [(donor_in, "pre", feed)], ids)

    def output_half(ids: torch.Tensor) -> torch.Tensor:
        seen: dict[str, torch.Tensor] = {}

        def capture(_m, _args, output):
            seen["h"] = _hidden(output)

        with_hooks(tuned, [(donor_out, "post", capture)], ids)
        written = graft.post_translator(seen["h"])

        def replace(_m, _args, output):
            return (written, *output[1:]) if isinstance(output, tuple) else written

        return with_hooks(grafted, [(host_slot, "post", replace)], ids)

    modes = [(m, m.training) for m in (tuned, grafted, vanilla_graft)]
    try:
        for model, _ in modes:
            model.eval()
        return {
            "Tuned": _digit_hits(lambda ids: logits(tuned, ids), items),
            "Grafted": _digit_hits(lambda ids: logits(grafted, ids), items),
            "VanillaGraft": _digit_hits(lambda ids: logits(vanilla_graft, ids), items),
            "input_half": _digit_hits(input_half, items),
            "output_half": _digit_hits(output_half, items),
            "n": len(items),
        }
    finally:
        for model, mode in modes:
            model.train(mode)


def plot_diagnostics(runs: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """One column per run (titled with its ``label``): relative ‖Δ‖ per block (donor vs graft), then the
    logit-lens log-probability of the answer's first token per block for the four models."""
    import matplotlib

    matplotlib.use("Agg")  # no display on clusters or CI
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, len(runs), figsize=(4.5 * len(runs), 7), squeeze=False)
    for col, run in enumerate(runs):
        donor, host = run["donor"], run["graft"]
        top, bottom = axes[0][col], axes[1][col]
        top.plot(donor["block"], donor["delta_rel"], "o-", label=f"donor Tuned − Vanilla (i={run['layer']})")
        top.plot(host["block"], host["delta_rel"], "s-", label=f"graft Grafted − VanillaGraft (j={run['dest']})")
        top.axvline(run["dest"], color="grey", lw=0.8, ls=":")
        cos = run["post_t"]["cos_graft_vs_mapped_donor"]
        top.set_title(f"{run.get('label', '')}\ncos(Δg, W_post Δd) = " + ("n/a" if cos is None else f"{cos:.2f}"),
                      fontsize=9)
        top.set_xlabel("block (residual after it)")
        top.set_ylabel("‖mean Δ‖ / mean ‖h‖")
        top.legend(fontsize=7)
        for pair, marker in ((donor, "o"), (host, "s")):
            for name, values in pair["lens_logprob"].items():
                bottom.plot(pair["block"], values, marker=marker, ls="-" if name in ("Tuned", "Grafted") else "--",
                            label=name)
        bottom.set_xlabel("block (residual after it)")
        bottom.set_ylabel("logit-lens log p(answer's first token)")
        bottom.legend(fontsize=7)
        for ax in (top, bottom):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
