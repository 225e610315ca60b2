"""The terminal: the ``cutswap`` commands (``cli``) and what a person sees of a run (``console``)."""
