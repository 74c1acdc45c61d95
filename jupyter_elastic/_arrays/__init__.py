"""Array plumbing of the compute library: which namespace an array lives in, input checks,
and the chunked (Dask) map-reduce engine.

``namespace`` is the one module in the package that knows CuPy exists. Nothing here imports
any other part of ``jupyter_elastic``: the compute library runs anywhere (a notebook, a
worker, a plain script) without the magics, the control plane or a server.
"""
