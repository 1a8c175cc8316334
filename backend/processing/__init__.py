"""Who runs the context file: the run path from a run event to stored values and the update
message (:mod:`.runpath`), the warm local worker pool (:mod:`.local`) and Slurm jobs
(:mod:`.slurm`)."""
