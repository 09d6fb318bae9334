"""Model presets shipped inside the package: ``models/<name>.yaml`` and the tiny pair's recipe ``tiny.yaml``.

One file per model serves both Hydra config groups ``host`` and ``donor`` (``python train.py host=pythia-70m
donor=tiny-vanilla``) and the Python API (``api.load_pair("tiny-host", "tiny-vanilla")``), in a clone or
from an installed wheel. :func:`register_presets` puts them into Hydra's ConfigStore (``import grafting``
calls it), so ``conf/`` holds no copies. Add a model: drop one YAML file into ``models/``.

A preset may hold ``as_host:``, settings that apply only when it fills the ``host`` group (the random
presets take seed 1 there, so a random host and a random donor of one preset differ).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODELS = HERE / "models"
TINY = HERE / "tiny.yaml"
#: The config groups a model preset can fill (the model that receives a capability, and the one that gives it).
MODEL_GROUPS = ("host", "donor")


def model_names() -> list[str]:
    """Every shipped model preset, by name (``models/<name>.yaml``)."""
    return sorted(p.stem for p in MODELS.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The file of preset ``name``; a :class:`~grafting.errors.ConfigError` naming the known presets if absent."""
    from grafting.errors import ConfigError

    path = MODELS / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError("model", f"no preset {name!r}; known: {', '.join(model_names())} ({MODELS}).")
    return path


def raw_preset(name: str, group: str = "donor") -> dict[str, Any]:
    """Preset ``name`` as it fills ``group`` (tiny presets hold ``${tiny.*}`` interpolations)."""
    spec = _load(preset_path(name))
    as_host = spec.pop("as_host", None) or {}
    return {**spec, **as_host} if group == "host" else spec


def tiny_recipe() -> dict[str, Any]:
    """The ``tiny`` node: architecture and pretraining recipe of the tiny pair (what tiny presets interpolate)."""
    return _load(TINY)


def _load(path: Path) -> dict[str, Any]:
    # OmegaConf's YAML loader, as Hydra reads conf/ (PyYAML alone reads 3e-3 as a string)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def register_presets() -> None:
    """Store every preset in Hydra's ConfigStore as ``host/<name>`` and ``donor/<name>``, and ``tiny/default``.

    Idempotent. The ``conf/`` folder of a clone still wins for a name it also defines (Hydra searches file
    configs before the ConfigStore).
    """
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    store = ConfigStore.instance()
    for name in model_names():
        for group in MODEL_GROUPS:
            store.store(group=group, name=name, node=OmegaConf.create(raw_preset(name, group)), provider="grafting")
    store.store(group="tiny", name="default", node=OmegaConf.load(TINY), provider="grafting")
