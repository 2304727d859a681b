"""Ray Data compress / restore jobs (see the pipeline issue)."""
