"""Background jobs: the catalogue of job kinds, the queue they are written to, and their outcomes."""
