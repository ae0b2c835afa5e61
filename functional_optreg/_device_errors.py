"""Checks that run on the device inside ``jit``, and their errors with the original message first.

A check on traced values (``clip_grad_norm(error_if_nonfinite=True)``, ``nonfinite_policy("raise")``,
a non-zero ``weight_decay`` without params) can only run when the compiled step runs, through
``jax.debug.callback``. jax 0.10.2 turns an exception raised there into a
``jax.errors.JaxRuntimeError`` whose text jaxlib writes: ``INTERNAL: CpuCallback error calling
callback:``, a traceback, then ``RuntimeError: <message>``. jaxlib's traceback is not the
exception's own but every frame of the stack the exception was first raised on, from the
outermost: raised inside the callback, that is the caller's whole stack down through jax's
dispatch (about 1,500 characters before the message). Nothing inside the traced function changes
the text's form: ``checkify.check`` refuses to be staged without the caller's
``checkify.checkify``, ``io_callback`` / ``pure_callback`` report errors the same way, and jaxlib
offers no hook that re-raises a callback's exception with its own type.

So a failed check does two things:

- it raises its exception again on a fresh thread's stack (:func:`_on_a_fresh_stack`), whose only
  frame is one of this module's: jaxlib's text is then the fixed prefix, one ``File`` line and the
  message (about 200 characters before the message, and nothing of the caller's stack);
- it remembers the exception, and :func:`original_errors`, wrapped around the call of the user's
  compiled step, re-raises it (its type, its message first, naming the argument or tree path) in
  place of the ``JaxRuntimeError``.
"""

from __future__ import annotations

import _thread
import collections
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jax

_REMEMBERED: collections.deque[Exception] = collections.deque(maxlen=32)
_LOCK = threading.Lock()


def check(check_fn: Callable[..., None], *args: Any) -> None:
    """Run ``check_fn(*args)`` now if ``args`` are concrete, else when the compiled call runs.

    ``check_fn`` raises to signal a failure. Under ``jit`` (or ``vmap``/``scan``) it is staged
    with ``jax.debug.callback`` and the exception it raises is remembered for
    :func:`original_errors`.
    """
    if not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(args)):
        check_fn(*args)
        return

    def remembering(*values: Any) -> None:
        try:
            check_fn(*values)
        except Exception as error:
            with _LOCK:
                _REMEMBERED.append(error)
            raise _on_a_fresh_stack(error) from None

    jax.debug.callback(remembering, *args)


def _on_a_fresh_stack(error: Exception) -> Exception:
    """``error``, raised again in the first frame of a new thread, so that its innermost traceback
    frame has no callers: jaxlib prints the stack above that frame (see the module docstring)."""
    error = error.with_traceback(None)
    finished = _thread.allocate_lock()
    finished.acquire()

    def first_frame() -> None:
        try:
            raise error
        except Exception:
            pass
        finally:
            finished.release()

    _thread.start_new_thread(first_frame, ())
    finished.acquire()
    return error


def _remembered_in(text: str) -> Exception | None:
    """The latest remembered exception whose ``Type: message`` line ends ``text`` (jaxlib's
    report of a failed callback ends with the exception as Python formats it)."""
    with _LOCK:
        for error in reversed(_REMEMBERED):
            if text.rstrip().endswith(f"{type(error).__name__}: {error}"):
                _REMEMBERED.remove(error)
                return error
    return None


@contextlib.contextmanager
def original_errors() -> Iterator[None]:
    """Re-raise the errors of functional_optreg's on-device checks as the original exceptions.

    Wrap the call of a compiled step (it also works as a decorator). A
    ``jax.errors.JaxRuntimeError`` coming from one of this library's checks under ``jit`` is
    replaced by the exception the check raised, so the message comes first and names the argument
    or tree path; any other exception passes through unchanged.

    Example:
      >>> import jax, jax.numpy as jnp, functional_optreg as fo
      >>> tx = fo.nonfinite_policy(fo.sgd(lr=0.1), "raise")
      >>> params = {"w": jnp.ones(2)}
      >>> step = jax.jit(tx.update)
      >>> with fo.original_errors():
      ...     step({"w": jnp.array([1.0, jnp.nan])}, tx.init(params), params)  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      RuntimeError: Non-finite gradients (nan or inf) at ['w']: the optimizer step was not taken. ...

    PyTorch equivalence:
      none needed in torch, whose checks run eagerly; this restores the eager experience for
      jitted steps (without it the same message ends the ``JaxRuntimeError``'s short text).
    """
    try:
        yield
    except jax.errors.JaxRuntimeError as error:
        original = _remembered_in(str(error))
        if original is None:
            raise
        raise original.with_traceback(None) from None
