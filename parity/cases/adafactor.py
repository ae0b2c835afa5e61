"""torch.optim.Adafactor: every argument alone and the combinations that interact.

The default parameters factor the 4-D kernel over its last two dimensions and keep a full
variance for the vectors; the zero bias starts on the ``eps2`` floor of the relative step.
"""

import numpy as np
import torch

import functional_optreg as fo
from functional_optreg import verify
from parity.case import Case
from parity.schedules_for_cases import exponential_lr

_schedule, _torch_scheduler = exponential_lr(0.05, 0.97)


def _odd_shapes():
    """A 0-D scale, a 3-D tensor, a single row and a single column."""
    rng = np.random.default_rng(7)
    return {
        "cube": rng.normal(size=(2, 3, 4)),
        "column": rng.normal(size=(5, 1)),
        "row": rng.normal(size=(1, 5)),
        "temperature": np.asarray(1.5),
    }


CASES = [
    Case("adafactor/default", fo.adafactor, torch.optim.Adafactor),
    Case("adafactor/lr", fo.adafactor, torch.optim.Adafactor, dict(lr=0.3)),
    Case("adafactor/beta2_decay", fo.adafactor, torch.optim.Adafactor, dict(lr=0.05, beta2_decay=-0.5)),
    Case("adafactor/eps", fo.adafactor, torch.optim.Adafactor, dict(lr=0.05, eps=(0.5, 0.2))),
    Case("adafactor/eps1_zero", fo.adafactor, torch.optim.Adafactor, dict(lr=0.05, eps=(0.0, 1e-3))),
    Case("adafactor/d", fo.adafactor, torch.optim.Adafactor, dict(lr=0.05, d=1.5)),
    Case("adafactor/weight_decay", fo.adafactor, torch.optim.Adafactor, dict(lr=0.05, weight_decay=0.5)),
    Case("adafactor/maximize", fo.adafactor, torch.optim.Adafactor, dict(lr=0.05, maximize=True)),
    Case(
        "adafactor/weight_decay+maximize",
        fo.adafactor,
        torch.optim.Adafactor,
        dict(lr=0.05, weight_decay=0.2, maximize=True),
    ),
    Case(
        "adafactor/shapes",
        fo.adafactor,
        torch.optim.Adafactor,
        dict(lr=0.1, weight_decay=0.1),
        params=_odd_shapes,
        # Autodiff gradients: the NumPy gradient route cannot hand torch a 0-D gradient.
        gradient=verify.quadratic_losses,
    ),
    Case(
        "adafactor/lr_schedule",
        fo.adafactor,
        torch.optim.Adafactor,
        dict(weight_decay=0.1),
        ours_kwargs=dict(lr=_schedule),
        torch_kwargs=dict(lr=0.05),
        torch_scheduler=_torch_scheduler,
    ),
]
