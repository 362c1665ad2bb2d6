"""--arch torchvision and ImageNet weights (downloaded, cached or given, verified), --freeze. No network: a
random-weights file stands for ImageNet's, a loopback server for download.pytorch.org."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from alexnet_tui.cli import build_config, main, train_parser
from alexnet_tui.config import TrainConfig
from alexnet_tui.engine import Trainer, pretrained
from alexnet_tui.engine import events as ev
from alexnet_tui.engine.checkpoint import load_checkpoint
from alexnet_tui.metrics import read_metrics
from alexnet_tui.model import AlexNet, build_model
from tests.conftest import TINY_ARGS, jpeg_bytes
from tests.test_download import Server

# torchvision's AlexNet cannot be made small: few images, one batch of 4 an epoch.
TV = dict(data="demo", arch="torchvision", image_size=67, demo_size=24, batch_size=4, workers=0, epochs=1,
          limit_batches=1)  # fmt: skip
TV_ARGS = ["--data", "demo", "--arch", "torchvision", "--image-size", "67", "--demo-size", "24", "--batch-size", "4",
           "--workers", "0", "--epochs", "1", "--limit-batches", "1"]  # fmt: skip


@dataclass
class WeightsFile:
    path: Path
    sha256: str
    size: int
    state: dict[str, torch.Tensor]


@pytest.fixture(scope="session")
def imagenet_file(tmp_path_factory) -> WeightsFile:
    """A state_dict of torchvision's AlexNet with random weights, standing for alexnet-owt-7be5be79.pth."""
    from torchvision.models import alexnet

    torch.manual_seed(1)
    state = alexnet(weights=None).state_dict()
    path = tmp_path_factory.mktemp("imagenet") / "alexnet-random.pth"
    torch.save(state, path)
    return WeightsFile(path, hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size, state)


@pytest.fixture(autouse=True)
def torch_home(tmp_path, monkeypatch) -> Path:
    """Never the user's hub cache: $TORCH_HOME/hub/checkpoints under the test's folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "torch-home"


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch):
    """torchvision's checkpoints are ~0.9 GB a run; their durability is tested elsewhere (tests/test_faults.py)."""
    monkeypatch.setattr("os.fsync", lambda fd: None)


@pytest.fixture
def published(monkeypatch, imagenet_file) -> WeightsFile:
    """The random file's sha256 and size stand for the published ones."""
    monkeypatch.setattr(pretrained, "WEIGHTS_SHA256", imagenet_file.sha256)
    monkeypatch.setattr(pretrained, "WEIGHTS_SIZE", imagenet_file.size)
    return imagenet_file


def one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    return captured.err


# ---- the published constants, the architecture, the summary --------------------------------------------
def test_the_published_file_is_named_in_one_place():
    assert pretrained.WEIGHTS_URL.endswith("/alexnet-owt-7be5be79.pth")
    assert pretrained.WEIGHTS_SHA256.startswith("7be5be79") and pretrained.WEIGHTS_SIZE == 244_408_911


def test_torchvision_arch_summary_and_image_size(capsys):
    assert TrainConfig().image_size == 227 and TrainConfig(arch="torchvision").image_size == 224
    assert TrainConfig(arch="torchvision", image_size=96).image_size == 96  # a typed value wins
    assert main(["summary", "--arch", "torchvision", "--num-classes", "1000"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 61,100,840" in out and "[-1, 64, 55, 55]" in out  # 224 input, 64 filters
    assert main(["summary", "--arch", "torchvision", "--width", "0.5"]) == 2
    assert "applies to the tutorial's network only" in one_line_error(capsys)
    assert isinstance(build_model("tutorial", 2), AlexNet) and build_model("torchvision", 3).arch == "torchvision"


# ---- ImageNet weights from a file ------------------------------------------------------------------------
def test_wrong_sha256_is_refused_in_one_line(tmp_path, monkeypatch, capsys, imagenet_file):
    monkeypatch.setattr(pretrained, "WEIGHTS_SIZE", imagenet_file.size)  # right size, wrong hash
    out = tmp_path / "run"
    args = ["--no-ui", *TV_ARGS, "--weights", str(imagenet_file.path), "--out", str(out)]
    assert main(args) == 2
    error = one_line_error(capsys)
    assert f"sha256 {imagenet_file.sha256}, expected {pretrained.WEIGHTS_SHA256}" in error
    assert "--no-verify" in error and not out.exists()


def test_no_verify_loads_the_file_replaces_the_head_and_freeze_trains_the_classifier_only(tmp_path, imagenet_file):
    config = TrainConfig(**TV, out=str(tmp_path / "run"), weights=str(imagenet_file.path), verify=False,
                         freeze="features")  # fmt: skip
    assert config.pretrained
    events: list[ev.Event] = []
    with Trainer(config, [events.append]) as trainer:
        trainer.prepare()
        model = trainer.run.model
        assert model.classifier[6].out_features == 3
        state = model.state_dict()
        for key, value in imagenet_file.state.items():
            if not key.startswith("classifier.6."):
                assert torch.equal(state[key], value), key
        assert not torch.equal(state["classifier.6.weight"], imagenet_file.state["classifier.6.weight"][:3])
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimized = [p for group in trainer.run.optimizer.param_groups for p in group["params"]]
        assert len(optimized) == len(trainable) == 6  # the classifier's three Linear layers
        before = {k: v.clone() for k, v in model.state_dict().items()}
        images, labels = next(iter(trainer.run.loader("train")))
        trainer.train_step(images, labels, 1)
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("features."))
        assert all(not torch.equal(before[k], after[k]) for k in before if k.startswith("classifier."))
    notices = [e.message for e in events if isinstance(e, ev.Notice)]
    assert any("started from ImageNet weights" in n for n in notices)
    assert any(n.startswith("--freeze features: training 54,") for n in notices)


def test_the_weights_a_run_started_from_are_in_its_log_and_metrics(tmp_path, capsys, imagenet_file):
    """Said while preparing, before the run folder exists: kept for train.log and metrics.jsonl too,
    so that `attach` and a later reader know which file (verified or not) and what was trained."""
    run = tmp_path / "run"
    args = ["--no-ui", *TV_ARGS, "--weights", str(imagenet_file.path), "--no-verify", "--freeze", "features"]
    assert main([*args, "--out", str(run)]) == 0
    said = f"ImageNet weights: {imagenet_file.path} (not verified: --no-verify)"
    log = (run / "train.log").read_text()
    assert f"[INFO] {said}" in log and "[INFO] --freeze features: training 54," in log
    assert "recipe: --lr 0.0001 --batch-size 4 --arch torchvision --pretrained --freeze features\n" in log
    assert log.index(said) < log.index("run directory:")
    notices = [r["message"] for r in read_metrics(run / "metrics.jsonl") if r["event"] == "notice"]
    assert notices[0] == said and any(n.startswith("--freeze features: training 54,") for n in notices)
    capsys.readouterr()
    assert main(["summary", "--checkpoint", str(run)]) == 0  # the run's network: torchvision's, 3 classes, frozen
    table = capsys.readouterr().out
    assert "Conv2d-1           [-1, 64, 16, 16]" in table and "Linear-21                    [-1, 3]" in table
    assert "Trainable params: 54," in table and "Non-trainable params: 2,469,696" in table
    assert main(["summary", "--checkpoint", str(run), "--arch", "tutorial"]) == 2
    assert "--checkpoint gives the network; leave out --arch" in one_line_error(capsys)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("tutorial-pretrained", "--pretrained needs --arch torchvision"),
        ("tutorial-weights", "--weights needs --arch torchvision"),
        ("width", "--width 0.5 applies to the tutorial's network only"),
        ("freeze-alone", "--freeze features needs --pretrained"),
        ("missing", "no such file"),
        ("truncated", "bytes, not the"),
        ("truncated-no-verify", "not a readable PyTorch weights file (truncated, or not a file torch.save wrote)"),
        ("tutorial-state-dict", "another architecture than torchvision's AlexNet (features.0.weight is [6, 3, 11, 11]"),
        ("tutorial-checkpoint", "another architecture than torchvision's AlexNet (features.0.weight is [6, 3, 11, 11]"),
        ("warmup", "--warmup-epochs 1 leaves nothing of --epochs 1"),
    ],
)
def test_bad_weights_and_options_are_one_line(tmp_path, monkeypatch, capsys, published, case, message):
    monkeypatch.chdir(tmp_path)
    truncated = tmp_path / "truncated.pth"
    with open(published.path, "rb") as source:
        truncated.write_bytes(source.read(published.size // 2))
    tutorial = AlexNet(2, 67, 1 / 16).state_dict()
    torch.save(tutorial, tmp_path / "tutorial.pth")
    torch.save({"format": 1, "architecture": "alexnet-2012-tutorial", "model": tutorial}, tmp_path / "best.pt")
    args = {
        "tutorial-pretrained": [*TINY_ARGS, "--pretrained"],
        "tutorial-weights": [*TINY_ARGS, "--weights", str(published.path)],
        "width": [*TV_ARGS, "--width", "0.5"],
        "freeze-alone": [*TV_ARGS, "--freeze", "features"],
        "missing": [*TV_ARGS, "--weights", "nowhere.pth"],
        "truncated": [*TV_ARGS, "--weights", str(truncated)],
        "truncated-no-verify": [*TV_ARGS, "--weights", str(truncated), "--no-verify"],
        "tutorial-state-dict": [*TV_ARGS, "--weights", "tutorial.pth", "--no-verify"],
        "tutorial-checkpoint": [*TV_ARGS, "--weights", "best.pt", "--no-verify"],
        "warmup": [*TINY_ARGS, "--epochs", "1", "--schedule", "cosine"],
    }[case]
    assert main(["--no-ui", *args, "--out", "run"]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_resume_keeps_the_architecture_and_refuses_another(tmp_path, capsys, imagenet_file):
    run = tmp_path / "run"
    with Trainer(TrainConfig(**TV, out=str(run), weights=str(imagenet_file.path), verify=False)) as trainer:
        trainer.prepare()
        trainer.save_last()
    saved = load_checkpoint(run)
    assert saved["arch"] == "torchvision" and saved["architecture"] == "alexnet-2012-tutorial"
    config = build_config(train_parser().parse_args(["--resume", str(run)]))
    assert (config.arch, config.image_size) == ("torchvision", 67)
    seen: list[ev.Event] = []
    with Trainer(config, [seen.append]) as resumed:
        resumed.prepare()
        assert resumed.run.model.arch == "torchvision" and resumed.run.model.features[0].out_channels == 64
    assert not any(isinstance(e, ev.Notice) and "ImageNet" in e.message for e in seen)  # weights from last.pt
    # The identity is said first, not what `--arch tutorial` with the run's --pretrained would break.
    assert main(["--no-ui", "--resume", str(run), "--arch", "tutorial"]) == 2
    assert "--arch tutorial would change what this run is (it was trained with --arch torchvision)" in one_line_error(
        capsys
    )


def test_a_weights_file_is_recorded_by_its_absolute_path(tmp_path, monkeypatch):
    """config.toml names the file, not the folder the run was started from."""
    monkeypatch.chdir(tmp_path)
    config = build_config(train_parser().parse_args(["--arch", "torchvision", "--weights", "w/alexnet.pth"]))
    assert config.weights == str(tmp_path / "w" / "alexnet.pth") and config.pretrained
    (tmp_path / "run.toml").write_text('arch = "torchvision"\nweights = "w/alexnet.pth"\n')
    config = build_config(train_parser().parse_args(["--config", "run.toml"]))
    assert config.weights == str(tmp_path / "w" / "alexnet.pth")


def test_checkpoints_from_before_arch_are_the_tutorials(tmp_path):
    from alexnet_tui.engine.checkpoint import CheckpointError, check_compatible, checkpoint_arch

    old = {"path": "old.pt", "num_classes": 2, "image_size": 227, "class_names": ["a", "b"]}
    assert checkpoint_arch(old) == "tutorial"
    check_compatible(old, 2, 227, ["a", "b"])
    with pytest.raises(CheckpointError, match="made for --arch tutorial, not torchvision"):
        check_compatible(old, 2, 227, ["a", "b"], arch="torchvision")


# ---- the download (a loopback server from tests/test_download.py) ---------------------------------------
def test_pretrained_downloads_once_into_the_hub_cache_and_verifies_it_every_run(
    tmp_path, monkeypatch, capsys, published, torch_home
):
    server = Server(published.path.read_bytes())  # any path: the file
    monkeypatch.setattr(
        pretrained, "WEIGHTS_URL", server.url.replace("kagglecatsanddogs_5340.zip", "alexnet-owt-test.pth")
    )
    monkeypatch.chdir(tmp_path)
    try:
        assert main(["--no-ui", *TV_ARGS, "--pretrained", "--tta", "--out", "first"]) == 0
        cached = torch_home / "hub" / "checkpoints" / "alexnet-owt-test.pth"
        assert len(server.requests) == 1 and pretrained.sha256_of(cached) == published.sha256
        out = capsys.readouterr().out
        assert "downloading torchvision's ImageNet AlexNet weights" in out and "test accuracy" in out
        last = load_checkpoint(tmp_path / "first")
        assert last["arch"] == "torchvision" and last["config"]["pretrained"] and last["config"]["tta"]
        image = tmp_path / "cat.jpg"
        image.write_bytes(jpeg_bytes(90, 60, seed=3))
        assert main(["predict", "--checkpoint", "first", str(image)]) == 0  # the ImageNet geometry, 67 px
        capsys.readouterr()
        notices: list[str] = []
        again = pretrained.pretrained_weights(None, True, notices.append, lambda done, total: None)
        assert torch.equal(again["features.0.weight"], published.state["features.0.weight"])
        assert len(server.requests) == 1 and notices == [f"ImageNet weights: {cached} (sha256 and size verified)"]
        data = bytearray(cached.read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size, another byte
        cached.write_bytes(bytes(data))
        assert main(["--no-ui", *TV_ARGS, "--pretrained", "--out", "third"]) == 2
        error = one_line_error(capsys)
        assert f"{cached}: sha256" in error and "delete it to download it again" in error
        assert len(server.requests) == 1 and not (tmp_path / "third").exists()
    finally:
        server.close()


def test_a_cut_download_resumes_and_no_network_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pretrained, "BACKOFF_S", 0.0)
    payload = bytes(range(256)) * 8192  # 2 MiB
    server = Server(payload, cuts=[700_000])
    notices: list[str] = []
    try:
        pretrained.download(server.url, tmp_path / "w.pth", lambda done, total: None, notices.append)
    finally:
        server.close()
    assert (tmp_path / "w.pth").read_bytes() == payload and not (tmp_path / "w.pth.part").exists()
    assert server.requests[1]["range"] == "bytes=700000-" and "(retry 1 of 5)" in notices[0]
    monkeypatch.setattr(pretrained, "WEIGHTS_URL", server.url)  # closed now: nothing listens there
    assert main(["--no-ui", *TV_ARGS, "--pretrained", "--out", str(tmp_path / "run")]) == 1
    error = one_line_error(capsys)
    assert "without internet, copy kagglecatsanddogs_5340.zip from another machine and give --weights FILE" in error


def test_the_imagenet_geometry_is_the_weights_own(tmp_path):
    """Shorter side to 256, centre crop 224, ImageNet mean and std: as AlexNet_Weights.IMAGENET1K_V1.transforms()."""
    from PIL import Image
    from torchvision.models import AlexNet_Weights

    from alexnet_tui.data.images import load_resized, split_variants
    from alexnet_tui.engine.tensors import to_model_input

    path = tmp_path / "wide.jpg"
    path.write_bytes(jpeg_bytes(400, 300, seed=4))
    ours = to_model_input(load_resized(path, 224, "imagenet")[None], torch.device("cpu"))[0]
    with Image.open(path) as image:
        theirs = AlexNet_Weights.IMAGENET1K_V1.transforms()(image.convert("RGB"))
    assert ours.shape == theirs.shape == (3, 224, 224)
    assert (ours - theirs).abs().mean() < 0.05  # PIL's and the tensor resize differ by a level here and there
    # (training geometry, stored side, evaluation geometry): --pretrained uses the weights' own for both
    assert split_variants(227, False, False) == ("train", 227, "eval")  # the tutorial's
    assert split_variants(224, True, False) == ("imagenet", 224, "imagenet")
    assert split_variants(227, False, True) == ("augment", 256, "eval")
    assert split_variants(224, True, True) == ("augment-imagenet", 256, "imagenet")
    assert load_resized(path, 256, "augment-imagenet").shape == (3, 256, 256)
