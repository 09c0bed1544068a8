"""Background work: the job table runner (SKIP LOCKED + lease), schedule and handlers."""
