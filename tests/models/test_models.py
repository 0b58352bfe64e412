"""Backbone registry: every backbone builds, 1-channel adaptation sums kernels, partial loading reports."""

from __future__ import annotations

import pytest
import torch

from medxfer.errors import ConfigError, MedxferError
from medxfer.models import (
    adapt_conv_weight,
    create_model,
    list_backbones,
    load_source_weights,
    reinit_last_stage,
    stage_prefixes,
    stem_for_size,
)


@pytest.mark.parametrize("name", list_backbones())
@pytest.mark.parametrize("in_chans", [1, 3])
def test_every_backbone_builds_and_runs(name, in_chans):
    torch.manual_seed(0)
    model = create_model(name, num_outputs=3, in_chans=in_chans, dropout=0.1, stem="small").eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_chans, 32, 32))
    assert out.shape == (2, 3)
    # every listed stage names real parameters, and the head is separate from them
    names = [n for n, _ in model.named_parameters()]
    for stage in stage_prefixes(model):
        assert any(n.startswith(p + ".") for n in names for p in stage), stage
    assert {n for n in names if n.startswith("head.")} == {"head.weight", "head.bias"}


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ConfigError) as e:
        create_model("resnet9000", 2, 1)
    assert "resnet18" in str(e.value) and "smallcnn" in str(e.value)


def test_config_names_the_backbones_the_table_lists_and_the_table_imports_no_torch():
    """`config validate` checks model.backbone against medxfer.models.backbones, the one table a new
    backbone is added to; reading that table imports no torch (a fresh interpreter proves it)."""
    import subprocess
    import sys
    from typing import get_args

    from medxfer.config import Backbone
    from medxfer.models.backbones import BACKBONES

    assert get_args(Backbone) == tuple(sorted(BACKBONES))
    code = ("import sys, medxfer.models.backbones as b; assert 'torch' not in sys.modules, 'torch imported'; "
            "print(len(b.BACKBONES))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == str(len(BACKBONES)), p.stderr


def test_grayscale_first_conv_sums_rgb_kernels():
    w = torch.randn(8, 3, 7, 7)
    gray = adapt_conv_weight(w, 1)
    assert torch.allclose(gray, w.sum(1, keepdim=True))
    # A gray image through the summed kernel == the RGB network on the image replicated 3x.
    x = torch.randn(1, 1, 16, 16)
    a = torch.nn.functional.conv2d(x, gray)
    b = torch.nn.functional.conv2d(x.repeat(1, 3, 1, 1), w)
    assert torch.allclose(a, b, atol=1e-4)


def test_source_weights_adapt_to_one_channel_and_new_head():
    torch.manual_seed(0)
    src = create_model("resnet18", num_outputs=5, in_chans=3)
    dst = create_model("resnet18", num_outputs=2, in_chans=1, stem="small")
    rep = load_source_weights(dst, src.state_dict())
    assert "backbone.conv1.weight" in rep["loaded"]
    assert torch.allclose(dst.backbone.conv1.weight, src.backbone.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(dst.backbone.layer4[1].conv2.weight, src.backbone.layer4[1].conv2.weight)
    assert sorted(rep["new"]) == ["head.bias", "head.weight"]
    assert any(s.startswith("head.weight (shape (5, 512) -> (2, 512))") for s in rep["skipped"])
    # DDP-prefixed state dicts load too
    rep2 = load_source_weights(dst, {f"module.{k}": v for k, v in src.state_dict().items()})
    assert len(rep2["loaded"]) == len(rep["loaded"])


def test_stem_choice_and_small_stem_keeps_detail():
    assert stem_for_size(28) == "small" and stem_for_size(64) == "small" and stem_for_size(128) == "standard"
    assert stem_for_size(28, "standard") == "standard"
    small = create_model("resnet18", 2, 1, stem="small")
    std = create_model("resnet18", 2, 1, stem="standard")
    assert small.backbone.conv1.stride == (1, 1) and std.backbone.conv1.stride == (2, 2)
    feats = {}
    for m, key in ((small, "s"), (std, "t")):
        m.backbone.layer4.register_forward_hook(lambda _m, _i, o, key=key: feats.__setitem__(key, o.shape))
        m.eval()(torch.randn(1, 1, 28, 28))
    assert feats["s"][-1] == 2 and feats["t"][-1] == 1


def test_reinit_last_stage_changes_only_it():
    torch.manual_seed(0)
    m = create_model("smallcnn", 2, 1)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    names = reinit_last_stage(m, seed=1)
    assert names and all(n.startswith("backbone.block4") for n in names)
    after = m.state_dict()
    assert not torch.equal(before["backbone.block4.0.weight"], after["backbone.block4.0.weight"])
    assert torch.equal(before["backbone.block1.0.weight"], after["backbone.block1.0.weight"])


def test_imagenet_offline_is_a_clear_error(tmp_path, monkeypatch):
    # A fresh torch cache and an unreachable proxy: the download fails for real, fast.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    # urllib caches its first opener, proxies included: drop it afterwards, or every later urlopen
    # in this process would go through the dead proxy.
    import urllib.request

    monkeypatch.setattr(urllib.request, "_opener", None)
    with pytest.raises(MedxferError) as e:
        create_model("resnet18", 2, 1, pretrained="imagenet")
    msg = str(e.value)
    assert "ImageNet weights of resnet18" in msg and str(tmp_path) in msg and "model.init: scratch" in msg
