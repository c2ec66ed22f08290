"""The daily partitioning shared by every partitioned asset: one partition = one Seoul calendar day,
and how a backfill of many days is spread over runs."""

import dagster as dg

#: Sessions are partitioned by the day they were created, on the Asia/Seoul clock the app runs on.
#: ``end_offset=1``: today (Seoul) is a partition too, so a retrain can train on today's conversations
#: (issue 15); the nightly schedule still requests yesterday, the last complete day.
daily_partitions = dg.DailyPartitionsDefinition(start_date="2025-01-01", timezone="Asia/Seoul", end_offset=1)

#: A backfill of many days runs as many runs of up to a week each: the run queue (or, on
#: Kubernetes, ``K8sRunLauncher``) runs them side by side in their own processes and machines,
#: while a run still amortizes its start (imports, the token vocabulary) over several days. Nothing
#: a day produces depends on which days share its run (`test_backfill_equivalence.py`).
DAILY_BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=7)
#: What every daily asset declares: ``@dg.asset(..., **DAILY)``.
DAILY = {"partitions_def": daily_partitions, "backfill_policy": DAILY_BACKFILL_POLICY}
