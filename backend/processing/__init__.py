"""Who runs the context file: the warm local worker pool and the one path from a run event to
stored values (:class:`~backend.processing.local.RunProcessor`)."""
