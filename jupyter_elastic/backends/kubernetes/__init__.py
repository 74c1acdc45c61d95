"""The Kubernetes backend: ``backend`` (clusters through the Dask operator), ``manifests``
(what they are made of) and ``scheduler`` (the scheduler preload the operator's autoscaler
asks). This ``__init__`` imports nothing, so scheduler pods that load the preload never
import kr8s or dask-kubernetes.
"""
