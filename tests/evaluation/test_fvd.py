"""FVD's feature extractors: the I3D network (SAME padding, weight loading without pickles) and a
tiny random VideoMAE, each against a hand computation."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from dreamrelation.errors import InputError
from dreamrelation.evaluation.fvd import I3DFeatures, InceptionI3d, Unit3D, VideoMAEFeatures, read_state_dict
from dreamrelation.testing.evaluation import write_random_i3d, write_tiny_videomae


def test_unit3d_pads_like_tensorflow_same() -> None:
    torch.manual_seed(0)
    unit = Unit3D(2, 3, kernel=(3, 7, 7), stride=(1, 2, 2), batch_norm=False, activation=False)
    x = torch.randn(1, 2, 5, 16, 15)
    # TF SAME: out = ceil(n / s); total = (out - 1) * s + k - n, the odd pixel at the end.
    # T: 5 -> 5, total 2 (1, 1); H: 16 -> 8, total 5 (2, 3); W: 15 -> 8, total 6 (3, 3)
    expected = F.conv3d(F.pad(x, (3, 3, 2, 3, 1, 1)), unit.conv3d.weight, unit.conv3d.bias, stride=(1, 2, 2))
    got = unit(x)
    assert got.shape == (1, 3, 5, 8, 8)
    torch.testing.assert_close(got, expected)


def test_i3d_layout_and_shapes() -> None:
    model = InceptionI3d().eval()
    keys = model.state_dict().keys()
    # the parameter names of the common PyTorch conversion of DeepMind's checkpoint
    assert {"Conv3d_1a_7x7.conv3d.weight", "Mixed_4f.b3b.bn.running_var", "logits.conv3d.bias"} <= set(keys)
    assert model.state_dict()["Mixed_4f.b3b.conv3d.weight"].shape == (128, 528, 1, 1, 1)
    assert 12_000_000 < sum(p.numel() for p in model.parameters()) < 13_000_000  # I3D RGB: ~12.7 M
    with torch.no_grad():
        logits, pooled = model(torch.rand(2, 3, 8, 32, 32) * 2 - 1)
    assert logits.shape == (2, 400) and pooled.shape == (2, 1024)


@pytest.fixture(scope="module")
def i3d_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_i3d(tmp_path_factory.mktemp("i3d") / "i3d.safetensors")


def test_i3d_features_load_from_safetensors_and_weights_only_pt(i3d_weights: Path, tmp_path: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 255, (12, 40, 48, 3), dtype=np.uint8)
    extractor = I3DFeatures(i3d_weights, num_frames=8, size=32, device="cpu")
    got = extractor(frames)
    assert got.shape == (400,)
    # the random network tells videos apart, so the comparison below is not vacuous
    assert np.abs(extractor(frames[::-1].copy()) - got).max() > 1e-2

    model = InceptionI3d().eval()
    model.load_state_dict(read_state_dict(i3d_weights))
    picked = frames[[0, 2, 3, 5, 6, 8, 9, 11]]  # 8 evenly spaced of 12
    clip = torch.from_numpy(picked).permute(0, 3, 1, 2).float()
    clip = F.interpolate(clip, size=(32, 32), mode="bilinear", align_corners=False) / 127.5 - 1
    with torch.no_grad():
        logits, pooled = model(clip.permute(1, 0, 2, 3)[None])
    np.testing.assert_allclose(got, logits[0].numpy(), rtol=1e-5, atol=1e-5)

    pt = tmp_path / "i3d.pt"
    torch.save({"module." + k: v for k, v in read_state_dict(i3d_weights).items()}, pt)  # DataParallel names
    from_pt = I3DFeatures(pt, num_frames=8, size=32, feature="pool", device="cpu")
    np.testing.assert_allclose(from_pt(frames), pooled[0].numpy(), rtol=1e-5, atol=1e-5)


class _Payload:
    def __reduce__(self):  # noqa: ANN204 - a pickle that would run code if unpickled unsafely
        return (print, ("pickle executed",))


def test_i3d_refuses_pickles_and_wrong_layouts(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"x": _Payload()}))
    with pytest.raises(InputError, match="weights_only"):
        I3DFeatures(evil, device="cpu")
    other = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({"fc.weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(InputError, match="does not match the I3D layout"):
        I3DFeatures(other, device="cpu")
    with pytest.raises(InputError, match="I3D weights not found"):
        I3DFeatures(tmp_path / "missing.safetensors", device="cpu")


def test_videomae_features_are_the_mean_pooled_last_hidden_state(tmp_path: Path) -> None:
    folder = write_tiny_videomae(tmp_path / "videomae")
    extractor = VideoMAEFeatures(str(folder), device="cpu")
    frames = np.random.default_rng(2).integers(0, 255, (7, 36, 44, 3), dtype=np.uint8)
    got = extractor(frames)
    assert extractor.num_frames == 4 and got.shape == (16,)
    pixels = extractor.processor([frames[i] for i in (0, 2, 4, 6)], return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 4, 3, 32, 32)
    with torch.no_grad():
        hidden = extractor.model(pixel_values=pixels).last_hidden_state
    assert hidden.shape == (1, 2 * 4 * 4, 16)  # (4 frames / tubelet 2) x (32 / 8)^2 tokens
    np.testing.assert_allclose(got, hidden.mean(1)[0].numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="at least 4 frames"):
        extractor(frames[:3])
