"""The notebook kernel's side: the ``%%gpu``/``%gpu`` magics (``magics``), this kernel's
lease and Dask client (``session``), running a cell (``dispatch``; ``local`` for
``--local``) and what cells show (``display``). Runs in the kernel; imports the control
plane's interface, ``execution`` and the leaf modules, never ``server`` or ``backends``.
"""
