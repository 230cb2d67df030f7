"""Video models train, evaluate and predict from clip folders (frame folders, .npy, .npz)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from rich.console import Console
from video_helpers import TINY_VIVIT, make_clip_dataset

from vitzoo.commands.predict import predict as predict_cmd
from vitzoo.commands.train import evaluate as evaluate_cmd
from vitzoo.data.folders import SampleIndex
from vitzoo.data.folders import generator as seeded
from vitzoo.data.images import frame_indices, read_clip
from vitzoo.training.trainer import train


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip_dataset(tmp_path_factory.mktemp("clips"))


def test_frame_sampling_is_seeded_jittered_and_covers_the_clip() -> None:
    assert frame_indices(8, 4, None) == [1, 3, 5, 7]  # evaluation: segment middles
    jittered = [frame_indices(8, 4, seeded(s)) for s in range(20)]
    assert jittered == [frame_indices(8, 4, seeded(s)) for s in range(20)]
    assert len({tuple(j) for j in jittered}) > 1
    for picks in jittered:  # one frame from each segment of two
        assert [p // 2 for p in picks] == [0, 1, 2, 3]
    assert frame_indices(2, 4, None) == [0, 0, 1, 1]  # a short clip repeats frames in order


def test_every_clip_format_reads_the_same_frames(clips: Path) -> None:
    folder = SampleIndex.scan(clips / "train", kind="clip")
    assert folder.classes == ["down", "left", "right", "up"] and len(folder) == 40
    kinds = {p.suffix or "dir" for p, _ in folder.samples}
    assert kinds == {".npy", ".npz", "dir"}
    array = np.load(clips / "train" / "up" / "clip2.npy")
    frames = read_clip(clips / "train" / "up" / "clip2.npy", 4, 1, None, False)
    assert [np.asarray(f).tolist() for f in frames] == [array[i].tolist() for i in (1, 3, 5, 7)]


def test_tiny_vivit_learns_the_direction_of_motion(clips: Path, tmp_path: Path) -> None:
    """Chance is 25% (four directions); the seeded run is deterministic."""
    quiet = Console(file=io.StringIO())
    result = train(TINY_VIVIT, clips, out=tmp_path / "run", console=quiet)
    assert result.model.input_size == (1, 4, 16, 16)
    accuracy = [row["val_accuracy"] for row in result.history]
    assert max(accuracy) >= 0.75 and accuracy[-1] >= 0.6, accuracy
    assert result.report is not None and result.report["balanced_accuracy"] >= 0.6
    ckpt = str(result.run_dir / "best.safetensors")
    runner = CliRunner()
    report = json.loads(runner.invoke(evaluate_cmd, [ckpt, "--data", str(clips), "--json"]).stdout)
    assert report["accuracy"] == pytest.approx(max(accuracy))
    assert report["classes"] == ["down", "left", "right", "up"]
    clip_folder = clips / "val" / "left" / "clip0"
    out = runner.invoke(predict_cmd, [ckpt, str(clip_folder), "--json", "-k", "4"])
    assert out.exit_code == 0, out.output
    top = json.loads(out.stdout)[0]["top"]
    assert len(top) == 4 and sum(t["probability"] for t in top) == pytest.approx(1.0, abs=1e-5)
    assert torch.isfinite(torch.tensor(result.final["train_loss"]))


def test_video_files_decode_with_pyav(tmp_path: Path) -> None:
    """The optional 'video' extra: clips stored as video files."""
    av = pytest.importorskip("av")
    path = tmp_path / "right" / "clip.mp4"
    path.parent.mkdir()
    (tmp_path / "left").mkdir()
    np.save(tmp_path / "left" / "clip.npy", np.zeros((8, 16, 16), np.uint8))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        for t in range(8):
            frame = np.zeros((16, 16, 3), np.uint8)
            frame[:, 2 * t : 2 * t + 2] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    folder = SampleIndex.scan(tmp_path, kind="clip")
    assert [p.name for p, _ in folder.samples] == ["clip.npy", "clip.mp4"]
    frames = read_clip(path, 4, 1, None, False)
    brightest = [int(np.asarray(f).mean(axis=0).argmax()) for f in frames]
    assert brightest == sorted(brightest) and brightest[0] < brightest[-1]  # it moves right
