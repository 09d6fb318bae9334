"""The stage names ``stage.name`` may take, and the module that runs each (read by grafting.schema too)."""

STAGES: dict[str, str] = {
    "pretrain": "grafting.stages.pretrain",
    "pretrain_mlm": "grafting.stages.pretrain_mlm",
    "finetune": "grafting.stages.finetune",
    "align": "grafting.stages.align",
    "pipeline": "grafting.stages.pipeline",
    "skillpack": "grafting.stages.skillpack",
    "skillpack_continual": "grafting.stages.skillpack_continual",
    "transplant": "grafting.stages.transplant",
    "diagnose": "grafting.stages.diagnose",
}
