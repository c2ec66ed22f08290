"""What every stage shares at run time: atomic files, the worker pool, alerts."""
