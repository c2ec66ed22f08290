"""Jobs, schedules and sensors: nightly refresh, retraining, failure alerts."""
