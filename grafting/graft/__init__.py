"""Layer grafting, the method the package is named after: a donor block between two translators in a host.

- :mod:`~grafting.graft.translators`: identity-initialised maps between two residual bases;
- :mod:`~grafting.graft.block`: Pre-T -> donor block -> Post-T, called like the host block it replaces;
- :mod:`~grafting.graft.grafted`: build, save and load a grafted model;
- :mod:`~grafting.graft.losses`: the alignment losses, by name;
- :mod:`~grafting.graft.finetuning` and :mod:`~grafting.graft.tuned_block`: fine-tune one donor block, store it;
- :mod:`~grafting.graft.alignment` (the paper's Pre-T then Post-T) and :mod:`~grafting.graft.distillation`
  (``align.method=distill``);
- :mod:`grafting.graft.hf`: a grafted model as a Hugging Face model (``import grafting.graft.hf`` registers it
  with the Auto classes).

Alignment methods as the pipeline runs them are one file each in ``grafting/stages/align_methods``.
"""
