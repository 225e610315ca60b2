"""Training the classifier: the model (``models``), the loop (``loop``) with its resumable checkpoint
(``checkpoint``), the resolved device and precision (``execution``), the out-of-memory retry (``oom``) and
data-parallel training over several GPUs (``ddp``).
"""
