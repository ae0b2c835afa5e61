"""``python -m parity port <module>:<factory>``: locate where a ported training step diverges from torch.

    python -m parity port examples.seed_cnn_ports:eps_inside_sqrt
    python -m parity port my_port.py:build --out reports/my_port --steps 20 --dtype float32
    python -m parity port my_port.py:build --free-running

``<module>`` is a dotted module name importable from the current directory, or a path to a
``.py`` file. The factory contract:

* ``factory()`` takes no arguments and returns a :class:`functional_optreg.port_check.Port`:
  the torch module with its loss, optimizer builder (``torch_optimizer(module)``), optional
  scheduler and clipping; the flax module with its variables, loss and transform; the mapping
  from torch parameter names to their place in ``variables["params"]`` (as
  :func:`functional_optreg.module_to_flax` returns it); and the batches, as NumPy arrays.
* It builds everything in float32 or float64; the locator casts the torch module, the
  variables and the floating-point arrays of every batch to ``--dtype`` itself.
* The torch module is used in the mode the factory leaves it in (``train()`` by default), and
  both sides must be deterministic (no dropout).
* ``apply_kwargs`` values must be hashable (they are static arguments of the jitted step).

The report is printed and written to ``--out`` (default ``port_report/``): ``report.txt`` (the
first divergence, its likely causes, the per-stage table), ``checks.csv`` (every comparison) and
``stages.png`` (per-stage error over steps, and the two loss curves). Exit status 1 when the port
diverges, 2 when the target cannot be loaded.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from typing import Any


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m parity port", description=__doc__.split("\n")[0])
    parser.add_argument(
        "target", metavar="MODULE:FACTORY", help="e.g. examples.seed_cnn_ports:correct or my_port.py:build"
    )
    parser.add_argument(
        "--out", default="port_report", metavar="DIR", help="folder for the report (default port_report/)"
    )
    parser.add_argument("--steps", type=int, help="how many batches to run (default: all)")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--free-running", action="store_true", help="no per-step resync from torch's weights")
    return parser.parse_args(argv)


def load_factory(target: str) -> Callable[[], Any]:
    """The factory named by ``module:factory`` (a dotted module or a ``.py`` path)."""
    module_name, separator, factory_name = target.rpartition(":")
    if not separator or not module_name or not factory_name:
        raise ValueError(f"expected MODULE:FACTORY, got {target!r}")
    if module_name.endswith(".py"):
        spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(module_name))[0], module_name)
        if spec is None or spec.loader is None or not os.path.exists(module_name):
            raise ValueError(f"cannot load {module_name!r}: no such Python file")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        module = importlib.import_module(module_name)
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise ValueError(f"{module_name!r} has no callable {factory_name!r}")
    return factory


def main(argv: list[str]) -> int:
    from functional_optreg.port_check import Port, compare_training

    args = _parse(argv)
    try:
        factory = load_factory(args.target)
    except (ValueError, ImportError) as error:
        print(f"python -m parity port: {error}", file=sys.stderr)
        return 2
    port = factory()
    if not isinstance(port, Port):
        print(f"python -m parity port: {args.target}() returned {type(port).__name__}, not a Port", file=sys.stderr)
        return 2
    report = compare_training(port, steps=args.steps, dtype=args.dtype, resync=not args.free_running)
    print(report)
    paths = report.write(args.out)
    print(f"\nreport written to {os.path.dirname(paths['report.txt']) or '.'}/ (report.txt, checks.csv, stages.png)")
    return 0 if report.passed else 1
