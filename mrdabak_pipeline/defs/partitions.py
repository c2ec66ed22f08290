"""The daily partitioning shared by every partitioned asset: one partition = one Seoul calendar day."""

from dagster import DailyPartitionsDefinition

#: Sessions are partitioned by the day they were created, on the Asia/Seoul clock the app runs on.
daily_partitions = DailyPartitionsDefinition(start_date="2025-01-01", timezone="Asia/Seoul")
