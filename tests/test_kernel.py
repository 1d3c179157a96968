"""grow_kernel: convolution kernels enlarged by zero taps and wider padding, exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision
from helpers import teacher_unchanged

import fxgrow


def test_resnet18_kernels_grow_exactly():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    sizes = {
        "conv1": 9,
        "layer1.0.conv1": 5,
        "layer2.0.conv1": 7,  # stride 2
        "layer2.0.downsample.0": 3,
    }  # 1x1 stride 2 -> 3x3
    with teacher_unchanged(model):
        student = fxgrow.grow_kernel(model, x, sizes)
    assert type(student) is type(model)
    assert (model(x) - student(x)).abs().max() <= 1e-12
    for name, k in sizes.items():
        conv = student.get_submodule(name)
        assert conv.kernel_size == (k, k) and conv.weight.shape[-2:] == (k, k)
    ds = student.get_submodule("layer2.0.downsample.0")
    assert ds.padding == (1, 1) and ds.weight[..., 1, 1].equal(
        model.get_submodule("layer2.0.downsample.0").weight[..., 0, 0]
    )


def test_mobilenet_depthwise_kernel_grows_exactly():
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    student = fxgrow.grow_kernel(model, x, {"features.2.conv.1.0": 5})  # depthwise, stride 2
    assert student.get_submodule("features.2.conv.1.0").weight.shape == (96, 1, 5, 5)
    assert fxgrow.compare(model, student, x).max_rel <= 1e-6


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_strides_dilations_padding_modes_and_transposed(mode):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, padding_mode=mode),
        nn.ReLU(),
        nn.Conv2d(8, 8, (3, 1), dilation=2, padding="same"),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=3, padding="valid"),
        nn.ReLU(),
        nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1),
    ).double()
    x = torch.randn(2, 3, 24, 24, dtype=torch.float64)
    student = fxgrow.grow_kernel(model, x, {"0": 5, "2": (7, 3), "4": 5, "6": 7})
    assert torch.equal(model(x), student(x)) or (model(x) - student(x)).abs().max() < 1e-14
    assert student[2].padding == "same" and student[4].padding == (1, 1)
    assert student[6].padding == (3, 3) and student(x).shape == model(x).shape


def test_conv1d_and_conv3d():
    torch.manual_seed(0)
    for conv, x in (
        (nn.Conv1d(4, 6, 3, padding=1, stride=2), torch.randn(2, 4, 17)),
        (nn.Conv3d(2, 3, 1), torch.randn(1, 2, 5, 6, 7)),
    ):
        student = fxgrow.grow_kernel(conv, x, {"": 5})
        assert (conv(x) - student(x)).abs().max() < 1e-6


def test_grown_kernel_learns_its_new_taps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 64, 2))
    x = torch.randn(4, 3, 8, 8)
    student = fxgrow.grow_kernel(model, x, {"0": 5})
    student[0].weight.grad = None
    student(x).pow(2).sum().backward()
    assert student[0].weight.grad[..., 0, :].abs().sum() > 0  # the zero taps get gradient


def test_refusals():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(
        fxgrow.KernelError,
        match=r"grows an axis by an odd number \(1\).*"
        r"Grow by an even number \(e\.g\. \(5, 5\)\)",
    ):
        fxgrow.grow_kernel(model, x, {"0": 4})
    with pytest.raises(fxgrow.KernelError, match=r"has kernel \(3, 3\); fxgrow only grows"):
        fxgrow.grow_kernel(model, x, {"0": 1})
    with pytest.raises(fxgrow.KernelError, match="'1' is a ReLU, not a convolution"):
        fxgrow.grow_kernel(model, x, {"1": 5})
    with pytest.raises(fxgrow.KernelError, match="no module named '00'; did you mean '0'"):
        fxgrow.grow_kernel(model, x, {"00": 5})
    with pytest.raises(fxgrow.KernelError, match=r"must be an int or 2 ints, got \(5, 5, 5\)"):
        fxgrow.grow_kernel(model, x, {"0": (5, 5, 5)})
    assert issubclass(fxgrow.KernelError, fxgrow.InputError)


def test_cli_grow_kernel(tmp_path, capsys):
    from fxgrow.cli import main

    out = tmp_path / "k.safetensors"
    assert (
        main(
            [
                "grow-kernel",
                "torchvision:resnet18",
                "--input-shape",
                "1,3,32,32",
                "--kernel",
                "layer1.0.conv1=5",
                "-o",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "layer1.0.conv1: kernel (5, 5)" in text and "[ok," in text
    loaded = fxgrow.load(out)
    assert loaded.get_submodule("layer1.0.conv1").weight.shape == (64, 64, 5, 5)
    assert (
        main(
            [
                "grow-kernel",
                "torchvision:resnet18",
                "--input-shape",
                "1,3,32,32",
                "--kernel",
                "layer1.0.conv1=4",
                "-q",
            ]
        )
        == 2
    )
    assert "odd number" in capsys.readouterr().err
