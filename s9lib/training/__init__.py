"""How a model is made: recipes (every number of a run), its history, the batches it is fed,
the loop (``fit`` and ``train_step``) and distributed training under ``torchrun``.

``from s9lib.training import fit`` is the usual entry; the modules are ``recipes``,
``history``, ``batches``, ``loop`` and ``distributed``.
"""

from .loop import fit, train_step
from .recipes import RECIPES, Recipe, get_recipe

__all__ = ["fit", "train_step", "RECIPES", "Recipe", "get_recipe"]
