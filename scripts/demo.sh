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
dagster asset materialize -m mrdabak_pipeline.definitions \
  --select raw_conversation_logs,cleaned_sessions,rejected_sessions,augmented_sessions,dataset_shards \
  --partition-range "$start...$end" -c scripts/demo_daily.yaml

echo "== 3/3 datasets -> fine-tuned model -> evaluation -> promotion"
dagster asset materialize -m mrdabak_pipeline.definitions \
  --select openai_chat_dataset,huggingface_dataset,dpo_dataset,fine_tuned_model,evaluation_report,promoted_model \
  -c "${DEMO_TRAIN_CONFIG:-scripts/demo_train.yaml}"

echo
echo "Done. Evaluation report: ${MRDABAK_DATA_DIR:-data}/reports/. Open the UI with: make ui  (http://127.0.0.1:3000)"
