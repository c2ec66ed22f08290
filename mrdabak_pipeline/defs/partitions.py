"""The daily partitioning shared by every partitioned asset: one partition = one Seoul calendar day."""

import dagster as dg

#: Sessions are partitioned by the day they were created, on the Asia/Seoul clock the app runs on.
#: ``end_offset=1``: today (Seoul) is a partition too, so a retrain can train on today's conversations
#: (issue 15); the nightly schedule still requests yesterday, the last complete day.
daily_partitions = dg.DailyPartitionsDefinition(start_date="2025-01-01", timezone="Asia/Seoul", end_offset=1)
