"""Code that runs in the kernel **and** on workers: cell analysis (``analysis``), the one
runner of a cell body (``runner``), what travels for a cell (``payload``), and the worker
side (``worker``: Dask preload, output routing, input cache, interrupts).

Workers import this package, so it never imports ``kernel``, ``controlplane``, ``server``
or ``backends``; only the leaf modules and ``_arrays``.
"""
