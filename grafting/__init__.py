"""grafting: move capabilities between language models (layer grafting, SkillPacks, transplantation)."""

from omegaconf import OmegaConf

from grafting.presets import register_presets
from grafting.progress import show_progress

# ${mul:a,b} scales sizes in configs (e.g. the tiny host-size ladder); int when both are integers.
if not OmegaConf.has_resolver("mul"):
    OmegaConf.register_new_resolver("mul", lambda a, b: int(a * b) if float(a * b).is_integer() else a * b)

# ${add:a,b} offsets seeds (e.g. an independently initialised host: pair seed + 1000).
if not OmegaConf.has_resolver("add"):
    OmegaConf.register_new_resolver("add", lambda a, b: a + b)

# ${progress_bar:} turns progress bars on in a terminal, off under CI or without a TTY (grafting/progress.py).
if not OmegaConf.has_resolver("progress_bar"):
    OmegaConf.register_new_resolver("progress_bar", show_progress)

# Hydra's host/ and donor/ groups and the tiny recipe come from the presets shipped in the package.
register_presets()

__version__ = "0.1.0"
