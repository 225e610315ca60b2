"""Prefect tasks, one module per stage, each a thin wrapper over ``cutswap.pipeline.stages``.

The library's keyed stores decide what is reused, so Prefect's own result cache is off (``NONE``):
two caches that could disagree would make "rerun one stage" unpredictable.
"""
