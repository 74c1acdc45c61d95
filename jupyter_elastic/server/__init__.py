"""The Jupyter server side: the extension app (``app``: hosts the control plane, exports
its address to kernels, closes every cluster on shutdown) and the REST handlers
(``handlers``: parse, call the control plane, write JSON). Runs in the Jupyter server
process; imports ``controlplane`` and the leaf modules only.
"""
