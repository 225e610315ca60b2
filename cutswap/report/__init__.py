"""A run's report: tables (``tables``), the paired comparisons with intervals (``compare``) and the figures
(``figures``). Published reference figures live in ``reference/``."""
