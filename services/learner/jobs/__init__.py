"""Learning jobs: train, evaluate and promote routing policies as queued, budgeted,
cancellable work (see :mod:`.runner` for what a job does, :mod:`.pool` for who runs it)."""
