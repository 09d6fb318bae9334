"""SkillPack routers, one file each: ``<name>.py`` registers the router ``<name>`` (``skillpack.router=<name>``).

- ``learned``: logistic regression (or an MLP) on the base model's mean-pooled prompt features, trained on
  the packs' training prompts; top-1.
- ``centroid``: the nearest mean feature of each pack's training prompts (cosine); top-1, no gradient step.
- ``arrow``: zero training, from the packs alone. Each pack's prototype in a module is the top right
  singular vector of its delta there; a prompt goes to the pack whose prototypes its tokens' inputs
  project onto most (Ostapenko et al., 2024, per prompt rather than per token); top-1.
- ``gate``: the learned router's softmax, sharpened by a temperature and kept to its top-k packs: the
  packs are *mixed* per prompt, not picked.
- ``tokens``: every token of a prompt votes for the pack whose training prompts hold its nearest token
  (input embeddings by default: a bag-of-words match); shared tokens vote flat; top-1, no gradient step.

``grafting.names.ROUTERS`` lists this folder without importing torch.
"""

from __future__ import annotations

import importlib

from grafting import names
from grafting.skillpack.routers.base import ROUTERS, Router, one_hot, register, routed_generate

for _name in names.ROUTERS:
    importlib.import_module(f"{__name__}.{_name}")
names.registry(names.ROUTERS, ROUTERS)


def build_router(name: str, pack_names, **settings) -> Router:
    """The router ``name`` over ``pack_names`` with its settings (``skillpack.fusion.router``)."""
    if name not in ROUTERS:
        from grafting.errors import ConfigError

        raise ConfigError("skillpack.router", f"unknown router {name!r}; allowed: {sorted(ROUTERS)}.")
    return ROUTERS[name](pack_names, **settings)


__all__ = ["ROUTERS", "Router", "build_router", "one_hot", "register", "routed_generate"]
