"""What turns the method into a reproducible benchmark: typed settings (``settings``), keyed crash-safe Zarr
stores (``stores``) and the readers of their contents (``readers``), the pool of Dask workers and its jobs
(``parallel``), and the stage functions that tie them together (``stages``).

The core (``cutswap.data``, ``method``, ``learn``, ``score``) never imports this package.
"""
