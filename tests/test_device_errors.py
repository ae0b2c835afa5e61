"""fo.original_errors: checks that run inside a user's jax.jit reach the caller as the original
exception, message first; everything else passes through unchanged."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest

import functional_optreg as fo


def test_weight_decay_without_params_under_jit_is_the_original_value_error():
    tx = optax.inject_hyperparams(fo.adam)(lr=0.01)
    params = {"w": jnp.ones(3)}
    state = fo.set_hyperparams(tx.init(params), weight_decay=0.1)
    step = jax.jit(tx.update)
    with pytest.raises(jax.errors.JaxRuntimeError) as raw:
        jax.block_until_ready(step({"w": jnp.ones(3)}, state))
    assert not str(raw.value).startswith("adam needs")
    with pytest.raises(ValueError) as ours:
        with fo.original_errors():
            jax.block_until_ready(step({"w": jnp.ones(3)}, state))
    assert str(ours.value) == "adam needs the current parameters for weight_decay: call update(grads, state, params)."


def _not_ours(value):
    raise KeyError("not ours")


def test_other_callback_errors_and_exceptions_pass_through():
    @jax.jit
    def failing(x):
        jax.debug.callback(_not_ours, x)
        return x

    with pytest.raises(jax.errors.JaxRuntimeError, match="not ours"):
        with fo.original_errors():
            jax.block_until_ready(failing(jnp.ones(2)))
    with pytest.raises(ZeroDivisionError):
        with fo.original_errors():
            _ = 1 / 0


def test_works_as_a_decorator():
    tx = fo.nonfinite_policy(fo.sgd(lr=0.1), "raise")
    params = {"w": jnp.ones(2)}
    step = fo.original_errors()(jax.jit(tx.update))
    with pytest.raises(RuntimeError, match=r"^Non-finite gradients \(nan or inf\) at \['w'\]"):
        jax.block_until_ready(step({"w": jnp.array([jnp.nan, 1.0])}, tx.init(params), params))


def test_without_original_errors_the_text_is_short_and_holds_no_caller_frame():
    """jaxlib prints the stack the exception was first raised on; a failed check raises it again as
    the first frame of a fresh thread, so the text is the prefix, one of our frames and the message
    (before: the caller's whole stack, ~1,500 characters, before the message)."""
    tx = fo.clip_grad_norm(1.0, error_if_nonfinite=True)
    grads = {"w": jnp.array([1.0, jnp.nan])}

    def user_training_loop():
        return jax.block_until_ready(jax.jit(tx.update)(grads, tx.init(grads)))

    with pytest.raises(jax.errors.JaxRuntimeError) as raw:
        user_training_loop()
    lines = str(raw.value).splitlines()
    assert lines[0] == "INTERNAL: CpuCallback error calling callback: Traceback (most recent call last):"
    assert len(lines) == 3 and lines[1].startswith("  File ") and "_device_errors.py" in lines[1]
    assert lines[2].startswith("RuntimeError: The total norm of order 2.0 for gradients from `parameters`")
    assert "user_training_loop" not in str(raw.value)
