"""torch.optim.Muon: every argument, and the usual pairing with AdamW.

Muon takes 2-D parameters only, so its cases use their own tree of matrices: wide, tall
(transposed inside the Newton–Schulz iteration), square and a zero-initialised row. The pairing
case uses the default parameters, sending the matrix to Muon and the 1-D and 4-D leaves to AdamW
through ``optax.multi_transform``, against two torch optimizers stepping together.

Both sides run the Newton–Schulz iteration in bfloat16, so these cases are exact only because
both round every bfloat16 product the same way; the matrices are kept small (both sides at most
8), where no difference in float32 accumulation order was ever seen to change a bfloat16
rounding. Larger matrices drift by bfloat16 ulps (see the PyTorch equivalence note of fo.muon).
"""

import jax
import numpy as np
import optax
import torch

import functional_optreg as fo
from parity.case import Case
from parity.schedules_for_cases import exponential_lr

_schedule, _torch_scheduler = exponential_lr(0.02, 0.97)


def _matrices():
    rng = np.random.default_rng(8)
    return {
        "square": rng.normal(size=(3, 3)),
        "tall": rng.normal(size=(8, 3)),
        "wide": 0.5 * rng.normal(size=(5, 7)),
        "zero_row": np.zeros((1, 6)),
    }


def _is_matrix(leaf):
    return np.ndim(leaf) == 2


class _TorchMuonWithAdamW:
    """Torch's recommended split: Muon for the matrices, AdamW for every other tensor."""

    def __init__(self, tensors, muon_kwargs, adamw_kwargs):
        self.optimizers = [
            torch.optim.Muon([t for t in tensors if t.ndim == 2], **muon_kwargs),
            torch.optim.AdamW([t for t in tensors if t.ndim != 2], **adamw_kwargs),
        ]

    def zero_grad(self):
        for optimizer in self.optimizers:
            optimizer.zero_grad()

    def step(self):
        for optimizer in self.optimizers:
            optimizer.step()


def _muon_with_adamw(muon, adamw):
    return optax.multi_transform(
        {"muon": fo.muon(**muon), "adamw": fo.adamw(**adamw)},
        lambda params: jax.tree.map(lambda p: "muon" if _is_matrix(p) else "adamw", params),
    )


_PAIRING = dict(muon=dict(lr=0.02, weight_decay=0.05), adamw=dict(lr=3e-3, weight_decay=0.01))


def _muon_case(name, kwargs, **extra):
    return Case(
        f"muon/{name}",
        fo.muon,
        torch.optim.Muon,
        kwargs,
        params=_matrices,
        property_tests=False,
        **extra,
    )


CASES = [
    _muon_case("default", {}),
    _muon_case("lr", dict(lr=0.02)),
    _muon_case("momentum", dict(lr=0.02, momentum=0.8)),
    _muon_case("no_nesterov", dict(lr=0.02, nesterov=False)),
    _muon_case("weight_decay", dict(lr=0.02, weight_decay=0.5)),
    _muon_case("no_weight_decay", dict(lr=0.02, weight_decay=0.0)),
    _muon_case("original", dict(lr=0.02, adjust_lr_fn="original")),
    _muon_case("match_rms_adamw", dict(lr=0.01, adjust_lr_fn="match_rms_adamw")),
    _muon_case(
        "ns_settings",
        dict(lr=0.02, ns_coefficients=(2.0, -1.5, 0.5), ns_steps=3, eps=1e-3),
    ),
    _muon_case(
        "lr_schedule",
        dict(momentum=0.9),
        ours_kwargs=dict(lr=_schedule),
        torch_kwargs=dict(lr=0.02),
        torch_scheduler=_torch_scheduler,
    ),
    Case(
        "muon/with_adamw",
        lambda **kwargs: _muon_with_adamw(**kwargs),
        lambda tensors, muon, adamw: _TorchMuonWithAdamW(tensors, muon, adamw),
        _PAIRING,
        property_tests=False,
    ),
]
