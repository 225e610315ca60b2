"""The terminal: the ``cutswap`` commands (``cli``), what a person sees of a run (``console``) and whether
the person asked the run to stop (``stopping``)."""
