"""Independent reference computations for the tests: a saved LeNet-5 evaluated here, in one
process, with numpy doing the softmax (not kernels.metrics)."""
from __future__ import annotations

import numpy as np
import torch

from kernels import models


def lenet_log_probs(state: dict, images_u8: torch.Tensor, mean, std, num_classes: int = 10) -> np.ndarray:
    """log p(y|x) of a saved LeNet-5 (1×28×28 inputs) on uint8 images, normalised as the engine does."""
    model = models.create("lenet5", num_classes, 1, 28)
    model.load_state_dict(state)
    model.eval()
    x = (images_u8.float() / 255.0 - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    with torch.no_grad():
        z = model(x).double().numpy()
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
