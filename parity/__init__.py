"""The parity suite: torch-vs-functional_optreg cases, run by pytest and by ``python -m parity``.

Each module under :mod:`parity.cases` defines ``CASES``, a list of :class:`parity.case.Case`;
:func:`parity.catalog.all_cases` gathers them. Requires torch (the ``[torch]`` extra).
"""
