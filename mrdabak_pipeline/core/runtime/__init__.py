"""What every stage shares at run time: atomic files, the GC pause for bulk work, alerts."""
