"""torch.optim.Muon with our Newton–Schulz iteration, so Muon's float64 parity is machine-free.

Torch's Muon orthogonalizes the momentum in bfloat16 (``_zeropower_via_newtonschulz``); where a
float32 intermediate lands on one side of a bfloat16 rounding boundary depends on the machine:
torch's kernel level (``ATEN_CPU_CAPABILITY``: with and without fused multiply-adds, the norm's
summation order) and XLA's instruction set move it, and one element then moves by a bfloat16
ulp (2⁻⁸ relative), far above the float64 contract. Torch disagrees with itself the same way:
its ``default`` and ``avx512`` kernels give Newton–Schulz outputs up to 1.4 bfloat16 ulps apart
(normwise) on 5×7 matrices on the machine the parity suite was written on.

So the catalog checks Muon in two parts, each against a bound that holds on any machine:

* everything around the iteration (momentum, Nesterov, the lr adjustment, weight decay, the
  schedule, the pairing with AdamW), at the float64 contract, with both sides running *our*
  iteration: :class:`MuonWithOurNewtonSchulz` is ``torch.optim.Muon`` whose step calls
  :func:`functional_optreg.optimizers.muon.newton_schulz`;
* the iteration itself against torch's, at bfloat16 resolution, in ``tests/test_muon.py``,
  against torch's own spread between two kernel levels measured in the same run.
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.optim._muon as torch_muon

from functional_optreg.optimizers.muon import newton_schulz


@functools.cache
def _jitted_newton_schulz():
    return jax.jit(newton_schulz, static_argnums=(1, 2))


def _our_newton_schulz(grad, ns_coefficients, ns_steps, eps):
    """Torch's ``_zeropower_via_newtonschulz`` signature, computed by ours (a bfloat16 tensor)."""
    ours = _jitted_newton_schulz()(jnp.asarray(grad.detach().numpy()), tuple(ns_coefficients), ns_steps, eps)
    return torch.from_numpy(np.array(ours.astype(jnp.float32))).bfloat16()


@contextlib.contextmanager
def our_newton_schulz_in_torch():
    """Within the block, torch's Muon orthogonalizes with our iteration."""
    original = torch_muon._zeropower_via_newtonschulz
    torch_muon._zeropower_via_newtonschulz = _our_newton_schulz
    try:
        yield
    finally:
        torch_muon._zeropower_via_newtonschulz = original


class MuonWithOurNewtonSchulz(torch.optim.Muon):
    """``torch.optim.Muon`` whose steps run our Newton–Schulz iteration (see the module)."""

    def step(self, closure=None):
        with our_newton_schulz_in_torch():
            return super().step(closure)
