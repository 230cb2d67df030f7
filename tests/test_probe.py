"""Embeddings and probes: ``vitzoo embed``, ``vitzoo probe`` and the classifiers behind them.

The backbone is the 16x16 one-block ViT of the training tests (random weights) and the
generated two-class folder differs in colour (red-dominant against blue-dominant noise), which
any patch embedding separates; the probe must then be near-perfect, and its checkpoint must
compute the probe's function exactly. scikit-learn is the oracle for the logistic regression and
the k-NN.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from training_helpers import TINY_SPEC

import vitzoo
from vitzoo.checkpoint import read_checkpoint
from vitzoo.cli import cli
from vitzoo.training.embeddings import EmbeddingSet
from vitzoo.training.probe import fit
from vitzoo.training.probes import fit_linear_probe, knn_probabilities, logistic_regression

sklearn = pytest.importorskip("sklearn")


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)


def make_colour_folder(root: Path, per_class: int = 24, val_per_class: int = 12) -> Path:
    """``root/{train,val}/{female,male}/*.jpg``: noise with a red or a blue cast."""
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", val_per_class)):
        for label, name in enumerate(("female", "male")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                img = rng.integers(0, 120, size=(20, 20, 3)).astype(np.uint8)
                img[..., 0 if label == 0 else 2] += 120
                Image.fromarray(img).save(folder / f"{i}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_colour_folder(tmp_path_factory.mktemp("faces"))


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("backbone") / "backbone.safetensors"
    vitzoo.save(vitzoo.build({"model": TINY_SPEC["model"]}), path)
    return path


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.mark.parametrize("features", ["model", "mean"])
def test_probe_is_near_perfect_and_its_checkpoint_is_the_probe(
    backbone: Path, data: Path, tmp_path: Path, features: str
) -> None:
    ckpt = tmp_path / "probe.safetensors"
    code, output = invoke(
        "probe", backbone, "--data", data, "-o", ckpt, "--features", features, "--json"
    )
    assert code == 0, output
    report = json.loads(output)
    assert report["val_accuracy"] >= 0.95 and report["knn_accuracy"] >= 0.95
    assert report["samples"] == {"train": 48, "val": 24}
    # the checkpoint's logits are the fitted probe's logits on the embedded features
    emb = tmp_path / "emb.safetensors"
    assert invoke("embed", backbone, "--data", data, "-o", emb, "--features", features)[0] == 0
    embedded = EmbeddingSet.load(emb)
    model = vitzoo.load(ckpt).eval()
    tensors, metadata = read_checkpoint(ckpt)
    assert json.loads(metadata["vitzoo.classes"]) == ["female", "male"]
    head = model.get_classifier().fc
    val = embedded.splits["val"].features
    classifier, _ = fit(embedded)  # the same fit, again: deterministic
    with torch.no_grad():
        ours = head(val).double()
    expected = classifier.logits(val)
    assert (ours - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max().item())
    # evaluate reads the checkpoint like any other and agrees with the probe's accuracy
    code, output = invoke("evaluate", ckpt, "--data", data, "--json")
    assert code == 0, output
    assert json.loads(output)["accuracy"] == pytest.approx(report["val_accuracy"])


def test_probe_checkpoint_outputs_equal_embeddings_through_the_head(
    backbone: Path, data: Path, tmp_path: Path
) -> None:
    """The probe checkpoint's pooling is the one the features were taken with: its own
    pre-logits features of an image are the embedded row, exactly."""
    ckpt, emb = tmp_path / "probe.safetensors", tmp_path / "emb.safetensors"
    assert invoke("probe", backbone, "--data", data, "-o", ckpt, "--features", "cls")[0] == 0
    assert invoke("embed", ckpt, "--data", data, "-o", emb, "--features", "model")[0] == 0
    mine = tmp_path / "cls.safetensors"
    assert invoke("embed", backbone, "--data", data, "-o", mine, "--features", "cls")[0] == 0
    a = EmbeddingSet.load(emb).splits["val"].features
    b = EmbeddingSet.load(mine).splits["val"].features
    assert torch.equal(a, b)


def test_probe_checkpoint_predicts_and_exports(backbone: Path, data: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "probe.safetensors"
    assert invoke("probe", backbone, "--data", data, "-o", ckpt)[0] == 0
    code, output = invoke("predict", ckpt, data / "val", "--output", tmp_path / "p.csv")
    assert code == 0, output
    assert (tmp_path / "p.csv").read_text().count("\n") == 25  # header + 24 images
    code, output = invoke("export", ckpt, "-o", tmp_path / "probe.pt2")
    assert code == 0, output


def test_probe_reuses_an_embeddings_file_of_the_same_features(
    backbone: Path, data: Path, tmp_path: Path
) -> None:
    emb = tmp_path / "emb.safetensors"
    assert invoke("embed", backbone, "--data", data, "-o", emb)[0] == 0
    code, output = invoke(
        "probe", backbone, "--data", data, "-o", tmp_path / "p.safetensors", "--embeddings", emb
    )
    assert code == 0, output
    code, output = invoke(
        "probe",
        backbone,
        "--data",
        data,
        "-o",
        tmp_path / "r.safetensors",
        "--embeddings",
        emb,
        "--features",
        "mean",
    )
    assert code == 2 and "holds --features model embeddings, not mean" in output


def test_an_existing_output_is_refused_in_one_line(
    backbone: Path, data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "probe.safetensors"
    out.write_bytes(b"keep me")
    for command in ("probe", "embed"):
        code, output = invoke(command, backbone, "--data", data, "-o", out)
        assert code == 2
        assert output.strip().splitlines() == [
            f"error: {out} exists; pass --overwrite to replace it"
        ]
    assert out.read_bytes() == b"keep me"


# -- the classifiers against scikit-learn -------------------------------------------------------
def blobs(n: int = 90, dim: int = 6, classes: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=gen) * 2
    labels = torch.arange(n) % classes
    return centres[labels] + torch.randn(n, dim, generator=gen), labels


@pytest.mark.parametrize("l2", [1e-3, 1e-1])
def test_logistic_regression_matches_scikit_learn(l2: float) -> None:
    """Same objective (C = 1 / (l2 * N)): probabilities within 1e-6, coefficients within 1e-4
    (both solvers stop at a tolerance; the probabilities are what the probe is used for)."""
    from sklearn.linear_model import LogisticRegression

    x, y = blobs()
    ours = logistic_regression(x, y, 3, l2)
    theirs = LogisticRegression(C=1.0 / (l2 * len(y)), tol=1e-12, max_iter=10_000)
    theirs.fit(x.double().numpy(), y.numpy())
    p_ours = ours.logits(x).softmax(dim=-1).numpy()
    p_theirs = theirs.predict_proba(x.double().numpy())
    assert np.abs(p_ours - p_theirs).max() <= 1e-6
    centred = ours.weight.numpy() - ours.weight.numpy().mean(axis=0)  # sklearn's gauge
    assert np.abs(centred - theirs.coef_).max() <= 1e-4


def test_the_shipped_probe_fit_reaches_scikit_learns_optimum_on_correlated_features() -> None:
    """What ``vitzoo probe`` runs (a warm-started search over strengths, then the chosen one
    solved to full tolerance) against scikit-learn on the same standardised objective, on
    features with a shared offset and correlated directions like a backbone's: probabilities
    within 1e-6 at the chosen strength."""
    from sklearn.linear_model import LogisticRegression

    x, y = blobs(n=300, dim=24, classes=3, seed=3)
    mixing = torch.randn(24, 24, generator=torch.Generator().manual_seed(4))
    x = x @ (torch.eye(24) + 0.9 * mixing) + 25.0
    xv, yv = blobs(n=90, dim=24, classes=3, seed=5)
    xv = xv @ (torch.eye(24) + 0.9 * mixing) + 25.0
    probe = fit_linear_probe(x, y, xv, yv, 3)
    chosen = probe.classifier.l2
    standard = (x.double() - x.double().mean(0)) / x.double().std(0, unbiased=False)
    theirs = LogisticRegression(C=1.0 / (chosen * len(y)), tol=1e-12, max_iter=10_000)
    theirs.fit(standard.numpy(), y.numpy())
    p_ours = probe.classifier.logits(x).softmax(dim=-1).numpy()
    assert np.abs(p_ours - theirs.predict_proba(standard.numpy())).max() <= 1e-6


def test_knn_matches_scikit_learns_weighted_cosine_neighbours() -> None:
    from sklearn.neighbors import KNeighborsClassifier

    x, y = blobs(n=120, seed=1)
    query, _ = blobs(n=30, seed=2)
    temperature = 0.07
    theirs = KNeighborsClassifier(
        n_neighbors=20,
        metric="cosine",
        algorithm="brute",
        weights=lambda d: np.exp((1.0 - d) / temperature),
    ).fit(x.double().numpy(), y.numpy())
    ours = knn_probabilities(x, y, query, 3, k=20, temperature=temperature)
    assert np.abs(ours.numpy() - theirs.predict_proba(query.double().numpy())).max() <= 1e-9


def test_the_readme_walkthrough_commands_exist_with_these_options() -> None:
    """Every ``vitzoo`` line of the README's small-data walkthrough parses against the CLI
    (each step itself is exercised by the tests above and in test_predict / test_finetune /
    test_named_weights)."""
    import shlex

    import click

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Small data") : readme.index("## Deploy")]
    block = section[
        section.index("```console") : section.index("```", section.index("```console") + 3)
    ]
    lines = [line[2:].split("  #")[0] for line in block.splitlines() if line.startswith("$ vitzoo")]
    assert len(lines) >= 8
    for line in lines:
        name, *args = shlex.split(line)[1:]
        command = cli.commands[name]
        with click.Context(command) as ctx:
            command.parse_args(ctx, list(args))


def _saved_backbone(tmp_path: Path, **model: object) -> Path:
    torch.manual_seed(0)
    path = tmp_path / f"{model.get('type', 'vit')}.safetensors"
    vitzoo.save(vitzoo.build({"model": {**TINY_SPEC["model"], **model}}), path)
    return path


def test_auto_features_follow_the_release_dinov2_probes_cls_mean_exactly(
    data: Path, tmp_path: Path
) -> None:
    """DINOv2's model card probes the class token with the patch mean (registers left out):
    ``--features auto`` (the default) takes it, and the probe checkpoint pools so itself -- its
    own pre-logits features are the embedded rows, and its head is 2 D wide."""
    backbone = _saved_backbone(
        tmp_path,
        type="dinov2",
        register_tokens=2,
        posenc={"type": "learned", "include_prefix": False},
    )
    ckpt, emb, mine = (tmp_path / n for n in ("p.safetensors", "e.safetensors", "m.safetensors"))
    code, output = invoke("probe", backbone, "--data", data, "-o", ckpt, "--json")
    assert code == 0, output
    assert json.loads(output)["features"] == "cls-mean"
    probed = vitzoo.load(ckpt)
    assert probed.vitzoo_spec.model.pool.type == "cls-mean"
    assert probed.get_classifier().fc.in_features == 2 * TINY_SPEC["model"]["dim"]
    assert invoke("embed", ckpt, "--data", data, "-o", emb, "--features", "model")[0] == 0
    assert invoke("embed", backbone, "--data", data, "-o", mine)[0] == 0
    assert EmbeddingSet.load(mine).features == "cls-mean"
    a, b = (EmbeddingSet.load(p).splits["val"].features for p in (emb, mine))
    assert torch.equal(a, b)


def test_cls_mean_of_a_model_with_a_pooled_norm_embeds_but_is_not_probed(
    data: Path, tmp_path: Path
) -> None:
    """With a norm of the pooled vector (BEiT's fc_norm) no linear head of the model reads the
    two poolings side by side: embed writes them, probe refuses in one line before embedding."""
    backbone = _saved_backbone(tmp_path, type="beit")
    emb = tmp_path / "e.safetensors"
    assert invoke("embed", backbone, "--data", data, "-o", emb, "--features", "cls-mean")[0] == 0
    assert EmbeddingSet.load(emb).splits["val"].features.shape == (24, 64)
    probe = ["probe", backbone, "--data", data, "-o", tmp_path / "p.safetensors"]
    code, output = invoke(*probe, "--features", "cls-mean")
    assert code == 2 and len(output.strip().splitlines()) == 1
    assert "cannot pool cls-mean itself" in output


def test_embeddings_of_another_backbone_are_refused(
    backbone: Path, data: Path, tmp_path: Path
) -> None:
    """A probe fitted on another model's embeddings and installed in this one would report an
    accuracy its checkpoint does not have: the file records which weights computed it."""
    other = _saved_backbone(tmp_path, depth=2)
    emb = tmp_path / "e.safetensors"
    assert invoke("embed", backbone, "--data", data, "-o", emb)[0] == 0
    code, output = invoke(
        "probe", other, "--data", data, "-o", tmp_path / "p.safetensors", "--embeddings", emb
    )
    assert code == 2 and "holds embeddings of another backbone" in output
    assert not (tmp_path / "p.safetensors").exists()


def test_one_class_is_refused_and_unreadable_images_make_results_partial(
    backbone: Path, tmp_path: Path
) -> None:
    one = make_colour_folder(tmp_path / "one", per_class=4, val_per_class=2)
    for split in ("train", "val"):
        for image in (one / split / "male").iterdir():
            image.unlink()
        (one / split / "male").rmdir()
    code, output = invoke("probe", backbone, "--data", one, "-o", tmp_path / "p.safetensors")
    assert code == 2 and "the data has 1 (female)" in output
    two = make_colour_folder(tmp_path / "two", per_class=4, val_per_class=2)
    (two / "train" / "male" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    code, output = invoke("embed", backbone, "--data", two, "-o", tmp_path / "e.safetensors")
    assert code == 3, output
    assert "skipped unreadable image" in output and "broken.jpg" in output
    assert "1 of 13 images could not be read" in output


def test_a_json_spec_file_is_a_source_like_yaml(data: Path, tmp_path: Path) -> None:
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps({"model": TINY_SPEC["model"]}))
    code, output = invoke("embed", spec, "--data", data, "-o", tmp_path / "e.safetensors")
    assert code == 0, output


def test_img_size_runs_the_backbone_at_another_size(data: Path, tmp_path: Path) -> None:
    """``--img-size`` builds the backbone at another input size, its weights adapted (positions
    resampled the backbone's own way): the probe checkpoint is that model."""
    backbone = _saved_backbone(tmp_path, type="dinov2")
    ckpt = tmp_path / "p.safetensors"
    code, output = invoke("probe", backbone, "--data", data, "-o", ckpt, "--img-size", "32")
    assert code == 0, output
    model = vitzoo.load(ckpt)
    assert model.vitzoo_spec.model.image_size == 32 and model.input_size == (3, 32, 32)
    code, output = invoke(
        "embed", backbone, "--data", data, "-o", tmp_path / "e", "--img-size", "0"
    )
    assert code == 2 and "--img-size" in output
