"""How a prediction is explained: class activation maps (``cam``: BaseCAM and its
subclasses, which import nothing else from s9lib, so the module can be read on its own).

Never imports ``s9lib.training``: explaining a model needs the model, not how it was made.
"""

from .cam import (METHODS, BaseCAM, CamResult, EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM,
                  LayerCAM, XGradCAM, explain, normalize_maps, resolve_layers)

__all__ = ["METHODS", "BaseCAM", "CamResult", "EigenCAM", "GradCAM", "GradCAMPlusPlus",
           "HiResCAM", "LayerCAM", "XGradCAM", "explain", "normalize_maps", "resolve_layers"]
