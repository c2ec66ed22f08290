#!/usr/bin/env bash
# The main job on the embedded defaults: seed the SQLite raw DB (once), then materialize the whole
# chain into the Dagster instance at $DAGSTER_HOME, where `make ui` shows it.
set -euo pipefail
cd "$(dirname "$0")/.."
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
mkdir -p "$DAGSTER_HOME"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"

days="${DEMO_DAYS:-14}"
sessions="${DEMO_SESSIONS:-800}"
read -r start end < <(python - "$days" <<'PY'
import sys
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo
end = datetime.now(ZoneInfo("Asia/Seoul")).date() - timedelta(days=1)
print(end - timedelta(days=int(sys.argv[1]) - 1), end)
PY
)

echo "== 1/3 raw DB: ${MRDABAK_DB_URL:-data/mrdabak.db}"
mrdabak seed --if-empty --sessions "$sessions" --days "$days" --end-date "$end"

echo "== 2/3 daily assets for $start...$end (one run over the range)"
# `dagster asset materialize --partition-range` only takes assets with a single-run backfill policy;
# the daily assets fan out (BackfillPolicy.multi_run) for daemon backfills, so the demo starts its
# one ranged run in process, with the range tags a single-run backfill would put on it.
python - "$start" "$end" <<'PY'
import sys

import dagster as dg
import yaml

from mrdabak_pipeline.defs.compat import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from mrdabak_pipeline.definitions import defs
from mrdabak_pipeline.defs.automation.automation import DAILY_ASSETS

result = dg.materialize(
    list(defs.assets), selection=list(DAILY_ASSETS), resources=defs.resources,
    instance=dg.DagsterInstance.get(), run_config=yaml.safe_load(open("scripts/demo_daily.yaml")),
    tags={ASSET_PARTITION_RANGE_START_TAG: sys.argv[1], ASSET_PARTITION_RANGE_END_TAG: sys.argv[2]},
)
sys.exit(0 if result.success else 1)
PY

echo "== 3/3 datasets -> fine-tuned model -> evaluation -> promotion"
dagster asset materialize -m mrdabak_pipeline.definitions \
  --select openai_chat_dataset,huggingface_dataset,dpo_dataset,fine_tuned_model,evaluation_report,promoted_model \
  -c "${DEMO_TRAIN_CONFIG:-scripts/demo_train.yaml}"

echo
echo "Done. Evaluation report: ${MRDABAK_DATA_DIR:-data}/reports/. Open the UI with: make ui  (http://127.0.0.1:3000)"
