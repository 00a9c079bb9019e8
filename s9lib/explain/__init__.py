"""How a prediction is explained: class activation maps (``cam``: BaseCAM and its
subclasses, which import nothing else from s9lib, so the module can be read on its own),
gradient attributions (``gradients``) and one interface over both plus two controls
(``methods``: a method name in, one map per image out).

Never imports ``s9lib.training`` (explaining a model needs the model, not how it was made)
nor ``s9lib.evaluate`` (whether to trust an explanation is asked about it, from outside).
"""

from .cam import (METHODS, BaseCAM, CamResult, EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM,
                  LayerCAM, XGradCAM, explain, normalize_maps, resolve_layers)
from .gradients import (GRADIENT_METHODS, Attribution, GuidedBackprop, GuidedGradCAM,
                        IntegratedGradients, Saliency, SmoothGrad, attribute)
from .methods import ALL_METHODS, CONTROLS, edge_maps, explain_map, resolve_method

__all__ = ["METHODS", "BaseCAM", "CamResult", "EigenCAM", "GradCAM", "GradCAMPlusPlus",
           "HiResCAM", "LayerCAM", "XGradCAM", "explain", "normalize_maps", "resolve_layers",
           "GRADIENT_METHODS", "Attribution", "GuidedBackprop", "GuidedGradCAM",
           "IntegratedGradients", "Saliency", "SmoothGrad", "attribute",
           "ALL_METHODS", "CONTROLS", "edge_maps", "explain_map", "resolve_method"]
