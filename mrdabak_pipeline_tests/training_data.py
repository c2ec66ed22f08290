"""Small chat datasets in the `huggingface_dataset` layout for the training tests.

Built from the domain's own menu, system prompt and reply format (`assistant_target`), so the
tiny model is trained on exactly what production parses; generated here rather than through the
full seed -> clean -> format pipeline to keep the training tests independent and fast.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from mrdabak_pipeline.core.domain import (
    ALLOWED_STYLES,
    DINNER_KO,
    STYLE_KO,
    DinnerType,
    assistant_target,
    missing_fields,
)
from mrdabak_pipeline_tests.prompt_fixtures import SYSTEM_PROMPT

_QTY_KO = {1: "한", 2: "두", 3: "세", 4: "네", 5: "다섯"}
_ASKS = ["{d} {s} 스타일로 {q} 주문할게요", "{d}를 {s}로 {q} 부탁드려요", "{q} {d} {s} 스타일 가능할까요?",
         "{s} 스타일 {d} {q} 주세요"]


def make_dialog(rng: random.Random, system_prompt: str = SYSTEM_PROMPT) -> list[dict[str, str]]:
    """One order dialog: the customer names dinner, style and quantity; the reply states the order."""
    dinner = rng.choice(list(DinnerType))
    style = rng.choice(sorted(ALLOWED_STYLES[dinner]))
    qty = rng.randint(1, 5)
    q = f"{_QTY_KO[qty]} 개" if rng.random() < 0.5 else f"{qty}개"
    user = rng.choice(_ASKS).format(d=DINNER_KO[dinner], s=STYLE_KO[style], q=q)
    state: dict[str, Any] = {"dinnerType": dinner.value, "servingStyle": style.value, "quantity": qty}
    state["readyForConfirmation"] = False
    state["needsMoreInfo"] = missing_fields(state)
    reply = assistant_target(f"{DINNER_KO[dinner]} {STYLE_KO[style]} {qty}개 담았습니다. 배달 날짜를 알려주세요.", state)
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": user},
            {"role": "assistant", "content": reply}]


def save_dataset(folder: Path, n_train: int, n_val: int, seed: int = 0,
                 system_prompt: str = SYSTEM_PROMPT) -> Path:
    """A ``DatasetDict.save_to_disk`` folder with train/validation splits and a ``messages`` column."""
    from datasets import Dataset, DatasetDict

    rng = random.Random(seed)
    dialogs = [make_dialog(rng, system_prompt) for _ in range(n_train + n_val)]
    dd = DatasetDict({"train": Dataset.from_dict({"messages": dialogs[:n_train]}),
                      "validation": Dataset.from_dict({"messages": dialogs[n_train:]})})
    dd.save_to_disk(str(folder))
    return folder


def write_dpo_pairs(path: Path, n: int = 8) -> Path:
    """The TRL shape of core.datasets.dpo's pairs (what dpo_dataset writes as ``trl_*.jsonl``):
    prompt / chosen / rejected message lists; the chosen reply states the asked order, the rejected one another."""
    import json

    rows = [{
        "prompt": [{"role": "system", "content": "미스터 대박 주문 도우미"}, {"role": "user", "content": f"발렌타인 디너 {i}인분"}],
        "chosen": [{"role": "assistant", "content": assistant_target("네.", {"dinnerType": "valentine", "quantity": i})}],
        "rejected": [{"role": "assistant", "content": assistant_target("네.", {"dinnerType": "french"})}],
    } for i in range(1, n + 1)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


#: The data high-water mark the dataset stand-ins carry.
DATASET_MARK = "2025-03-14T12:00:00+09:00"


def dataset_stand_ins(hf_path: Path, dpo_value: dict[str, Any] | None = None) -> list[Any]:
    """Stand-ins for the datasets group, with the value shapes of docs/ARCHITECTURE.md, so a test
    materializes `fine_tuned_model` alone on a saved Hugging Face dataset."""
    import dagster as dg

    @dg.asset(name="huggingface_dataset")
    def hf() -> dict[str, Any]:
        return {"path": str(hf_path), "counts": {"train": 24, "validation": 6}, "data_high_water_mark": DATASET_MARK}

    @dg.asset(name="openai_chat_dataset")
    def oa() -> dict[str, Any]:
        return {"train_path": "unused.jsonl", "data_high_water_mark": DATASET_MARK}

    @dg.asset(name="dpo_dataset")
    def dpo() -> dict[str, Any]:
        return dpo_value or {"format": "dpo", "pair_count": 0, "openai_train_path": None, "trl_train_path": None}

    return [hf, oa, dpo]

