"""``vitzoo predict`` over folders and file lists, in batches, to CSV / JSONL / Parquet, resumable.

The checkpoint is the 16x16 one-block ViT of the training tests (random weights); the inputs a
generated folder tree with an unreadable file in it.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from training_helpers import TINY_SPEC

import vitzoo
from vitzoo.cli import cli
from vitzoo.commands.errors import EXIT_PARTIAL
from vitzoo.training import prediction as predict_module


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    model = vitzoo.build({"model": {**TINY_SPEC["model"], "num_classes": 3}})
    vitzoo.save(model, path, metadata={"vitzoo.classes": json.dumps(["a", "b", "c"])})
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """23 images in nested folders plus one corrupt JPEG."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(23):
        folder = root / f"day{i % 3}" / ("sub" if i % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, size=(20 + i, 18, 3)).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:02d}.jpg", quality=90)
    (root / "day1" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "notes.txt").write_text("not an image, not collected")
    return root


def invoke(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def every_image(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*.jpg"))


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_folder_to_csv_has_one_row_per_image_and_error_rows(
    checkpoint: Path, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "preds.csv"
    code, output = invoke(
        "predict", checkpoint, photos, "--output", out, "-k", 2, "--batch-size", 5
    )
    assert code == EXIT_PARTIAL, output  # an unreadable input: its row has the error; partial
    rows = csv_rows(out)
    assert sorted(r["path"] for r in rows) == every_image(photos)
    assert list(rows[0]) == [
        "path",
        "class_1",
        "probability_1",
        "class_2",
        "probability_2",
        "error",
    ]
    broken = [r for r in rows if r["path"].endswith("broken.jpg")]
    assert len(broken) == 1 and "not an image file" in broken[0]["error"]
    good = [r for r in rows if not r["error"]]
    assert all(float(r["probability_1"]) >= float(r["probability_2"]) for r in good)
    assert "wrote 24 rows" in output and "1 unreadable" in output


def test_interrupted_run_resumes_writing_every_row_exactly_once(
    checkpoint: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C after two batches, a kill in the middle of a row (a cut last line), then --resume:
    every input is in the file exactly once, the unreadable one included."""
    out = tmp_path / "preds.jsonl"
    real = predict_module.probabilities
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(predict_module, "probabilities", interrupted)
    code, _ = invoke("predict", checkpoint, photos, "--output", out, "--batch-size", 5)
    assert code != 0
    first = out.read_text().splitlines()
    assert 0 < len(first) < 24
    with out.open("a") as handle:
        handle.write('{"path": "' + str(photos / "day0"))  # a row cut short by a kill
    monkeypatch.setattr(predict_module, "probabilities", real)
    code, output = invoke(
        "predict", checkpoint, photos, "--output", out, "--resume", "--batch-size", 5
    )
    broken_first = any("broken.jpg" in line for line in first)
    assert code == (0 if broken_first else EXIT_PARTIAL), output  # this run met the broken one?
    paths = [json.loads(line)["path"] for line in out.read_text().splitlines()]
    assert sorted(paths) == every_image(photos)  # once each: nothing lost, nothing twice
    assert f"({len(first)} already there)" in output


def test_csv_resume_after_a_cut_line(checkpoint: Path, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "preds.csv"
    assert invoke("predict", checkpoint, photos / "day0", "--output", out)[0] == 0
    text = out.read_text()
    out.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 12])  # last row cut mid-way
    code, output = invoke("predict", checkpoint, photos, "--output", out, "--resume")
    assert code == EXIT_PARTIAL, output
    assert sorted(r["path"] for r in csv_rows(out)) == every_image(photos)


def test_an_existing_output_needs_resume_or_overwrite(
    checkpoint: Path, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "preds.csv"
    out.write_text("keep")
    code, output = invoke("predict", checkpoint, photos / "day0", "--output", out)
    assert code == 2
    assert output.strip().splitlines() == [
        f"error: {out} exists; pass --resume to continue it or --overwrite to replace it"
    ]
    assert out.read_text() == "keep"
    code, _ = invoke("predict", checkpoint, photos / "day0", "--output", out, "--overwrite")
    assert code == 0 and len(csv_rows(out)) == len(list((photos / "day0").rglob("*.jpg")))


def test_from_file_and_explicit_files_together(
    checkpoint: Path, photos: Path, tmp_path: Path
) -> None:
    listed = every_image(photos)[:4]
    list_file = tmp_path / "list.txt"
    list_file.write_text("# photos to score\n" + "\n".join(listed[1:]) + "\n\n")
    out = tmp_path / "preds.jsonl"
    code, output = invoke(
        "predict", checkpoint, listed[0], "--from-file", list_file, "--output", out
    )
    assert code == 0, output
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()] == listed


def test_flip_averages_an_image_and_its_mirror(checkpoint: Path, tmp_path: Path) -> None:
    pixels = np.random.default_rng(1).integers(0, 255, size=(16, 16, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    Image.fromarray(pixels[:, ::-1].copy()).save(tmp_path / "mirror.png")

    def probs(*extra: str) -> dict[str, dict[str, float]]:
        code, output = invoke("predict", checkpoint, tmp_path, "--json", "-k", 3, *extra)
        assert code == 0, output
        return {
            Path(r["image"]).name: {t["class"]: t["probability"] for t in r["top"]}
            for r in json.loads(output)
        }

    plain, flipped = probs(), probs("--flip")
    for name in ("a", "b", "c"):
        mean = (plain["x.png"][name] + plain["mirror.png"][name]) / 2
        assert flipped["x.png"][name] == pytest.approx(mean, abs=1e-6)
        assert flipped["mirror.png"][name] == pytest.approx(mean, abs=1e-6)


def test_parquet_output_resumes_a_finished_file_with_new_inputs(
    checkpoint: Path, photos: Path, tmp_path: Path
) -> None:
    """Parquet is written at the end: a later --resume over more inputs keeps the old rows and
    adds the new ones (each path once); a run's leftover partial stream is not deleted silently
    by a run without --resume."""
    import pyarrow.parquet as pq

    out = tmp_path / "preds.parquet"
    assert invoke("predict", checkpoint, photos / "day2", "--output", out)[0] == 0
    first = pq.read_table(out).to_pylist()
    assert sorted(r["path"] for r in first) == every_image(photos / "day2")
    assert all(len(r["classes"]) == 3 and r["error"] is None for r in first)
    code, output = invoke(
        "predict", checkpoint, photos / "day2", photos / "day0", "--output", out, "--resume"
    )
    assert code == 0, output
    rows = pq.read_table(out).to_pylist()
    assert sorted(r["path"] for r in rows) == sorted(
        every_image(photos / "day2") + every_image(photos / "day0")
    )
    assert [r for r in rows if r["path"] in {f["path"] for f in first}] == first
    stream = tmp_path / "preds.parquet.partial.jsonl"
    assert not stream.exists()
    out.unlink()
    stream.write_text("")
    code, output = invoke("predict", checkpoint, photos / "day2", "--output", out)
    assert code == 2 and f"{stream} exists" in output and stream.exists()


def test_parquet_without_pyarrow_is_a_plain_error_before_any_work(
    checkpoint: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    out = tmp_path / "preds.parquet"
    code, output = invoke("predict", checkpoint, photos / "day2", "--output", out)
    assert code == 2
    assert output.strip().splitlines()[-1].startswith(f"--output {out}: Parquet needs pyarrow")
    assert not out.exists()


def test_resume_matches_rows_by_absolute_path_however_the_folder_is_spelled(
    checkpoint: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "preds.csv"
    monkeypatch.chdir(photos)
    assert invoke("predict", checkpoint, "day0", "--output", out)[0] == 0
    code, output = invoke("predict", checkpoint, photos / "day0", "--output", out, "--resume")
    assert code == 0, output
    assert len(csv_rows(out)) == len(every_image(photos / "day0"))
    assert "wrote 0 rows" in output


def test_an_empty_folder_is_bad_input_not_an_empty_file(checkpoint: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    code, output = invoke("predict", checkpoint, empty, "--output", tmp_path / "p.csv")
    assert code == 2 and len(output.strip().splitlines()) == 1
    assert f"{empty}: no images" in output


def test_unknown_output_suffix_is_refused_before_any_work(checkpoint: Path, tmp_path: Path) -> None:
    code, output = invoke("predict", checkpoint, tmp_path, "--output", tmp_path / "p.xlsx")
    assert code == 2 and "the suffix names the format; allowed: .csv, .jsonl, .parquet" in output
