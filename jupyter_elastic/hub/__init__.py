"""What runs inside a shared hub's services (the dask-gateway-server process).

Nothing is imported here: ``jupyter_elastic.hub.gateway`` is loaded by the gateway's own
``dask_gateway_config.py`` and imports dask-gateway-server, which notebooks do not have.
"""
