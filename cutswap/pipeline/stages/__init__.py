"""Stage functions: each reads the stores of the stages before it and returns one keyed store.

These are plain functions (no Prefect), so the pipeline can be driven from any code; ``tasks/`` wraps
them for Prefect. Every function takes the resolved :class:`cutswap.pipeline.settings.Settings`, its inputs as
:class:`cutswap.pipeline.stores.StoreRef`, and a ``mode`` (``run``, ``force`` or ``reuse``, see
:func:`cutswap.pipeline.stores.build_store`). They return ``(ref, computed)``.
"""

STAGES = ("ingest", "saliency", "cluster", "pairs", "train", "evaluate", "report")
