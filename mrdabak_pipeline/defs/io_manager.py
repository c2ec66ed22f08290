"""An IO manager that stores asset values as open formats: Parquet for tables, JSON for dicts.

Partitioned tables carry a ``partition_date`` column; each partition key becomes its own Parquet
file, so a run over a range of days stores every day separately, and a downstream asset
(partitioned or not) reads back exactly the days it asks for: as one table, or, for an input
declared with ``metadata={"lazy": True}``, as ``{partition key: loader}`` for the stored days, so
the asset reads only the days it wants, one at a time. Nothing is pickled: every stored
value can be opened with pandas, DuckDB or a text editor.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mrdabak_pipeline.core.runtime.files import atomic_write
from mrdabak_pipeline.defs.resources import default_data_dir


class ParquetJsonIOManager(dg.ConfigurableIOManager):
    """Tables -> ``<base>/<asset>/<partition>.parquet``; dicts/lists -> ``<base>/<asset>.json``."""

    base_dir: str | None = None

    def _base(self) -> Path:
        return Path(self.base_dir).absolute() if self.base_dir else default_data_dir() / "storage"

    def _asset_dir(self, context: dg.OutputContext | dg.InputContext) -> Path:
        return self._base().joinpath(*context.asset_key.path)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        folder = self._asset_dir(context)
        if isinstance(obj, pa.Table):
            if context.has_asset_partitions:
                keys = context.asset_partition_keys
                if "partition_date" not in obj.column_names:
                    raise ValueError(f"{context.asset_key.to_user_string()}: partitioned tables need a partition_date column")
                for key in keys:
                    part = obj.filter(pc.equal(obj["partition_date"], key))
                    atomic_write(folder / f"{key}.parquet", lambda tmp, t=part: pq.write_table(t, tmp))
                path = folder
            else:
                path = folder.with_suffix(".parquet")
                atomic_write(path, lambda tmp: pq.write_table(obj, tmp))
            context.add_output_metadata({"stored_at": dg.MetadataValue.path(str(path)), "stored_rows": obj.num_rows})
        elif isinstance(obj, (dict, list)):
            path = folder.with_suffix(".json")

            def write(tmp: str) -> None:
                Path(tmp).write_text(json.dumps(obj, ensure_ascii=False, indent=2, default=str), encoding="utf-8")

            atomic_write(path, write)
            # `stored_at`, not `dagster/uri`: assets that write files point `dagster/uri` at those.
            context.add_output_metadata({"stored_at": dg.MetadataValue.path(str(path))})
        else:
            raise TypeError(f"{type(obj).__name__} is not stored by this IO manager: return a pyarrow Table or a dict")

    def load_input(self, context: dg.InputContext) -> Any:
        folder = self._asset_dir(context)
        if context.has_asset_partitions:
            files = [folder / f"{key}.parquet" for key in context.asset_partition_keys]
            if context.definition_metadata.get("lazy"):
                return {f.stem: partial(pq.read_table, f) for f in files if f.exists()}
            tables = [pq.read_table(f) for f in files if f.exists()]
            if not tables:
                raise FileNotFoundError(
                    f"no stored partition of {context.asset_key.to_user_string()} among the "
                    f"{len(files)} requested: materialize it first"
                )
            return pa.concat_tables(tables, promote_options="default")
        if folder.with_suffix(".parquet").exists():
            return pq.read_table(folder.with_suffix(".parquet"))
        return json.loads(folder.with_suffix(".json").read_text(encoding="utf-8"))
