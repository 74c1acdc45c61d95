"""The fault suite: real kernels, workers and servers meeting real faults."""

#: One local worker, quick to retire and to stop: the faults' kernels start with these
#: (the memory limit is small enough for the out-of-memory test to reach quickly).
KERNEL_ENV = {
    "DASK_JUPYTER_ELASTIC__IDLE_TIMEOUT": "60s",
    "DASK_JUPYTER_ELASTIC__MAX_WORKERS": "1",
    "DASK_JUPYTER_ELASTIC__INTERRUPT_GRACE": "1s",
    "DASK_JUPYTER_ELASTIC__WORKER__MEMORY": "400MiB",
}
