"""What the cache is keyed by (``medxfer.data.cache.key``): ``channels: auto`` resolved from a seeded
sample of headers, and the resolved spec in the key and the card."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from datautil import colour_and_gray

from medxfer.config.loading import load_config
from medxfer.data.cache import prepare
from medxfer.errors import ConfigError


def test_channels_auto_is_resolved_from_the_headers_of_a_seeded_sample(test_data, tmp_path):
    from medxfer.data.cache import resolve_channels

    colour, gray = colour_and_gray(test_data, tmp_path)
    auto = load_config(None, [f"data.manifest={colour}"])
    assert auto.preprocess.channels == "auto"
    assert resolve_channels(auto).preprocess.channels == 3
    assert resolve_channels(load_config(None, [f"data.manifest={gray}"])).preprocess.channels == 1
    explicit = load_config(None, [f"data.manifest={colour}", "preprocess.channels=1"])
    assert resolve_channels(explicit) is explicit
    with pytest.raises(ConfigError, match=r"'auto' resolved to 1 .* preprocess.mean/std have 3 values"):
        resolve_channels(load_config(None, [f"data.manifest={gray}", "preprocess.mean=[0.4,0.5,0.6]",
                                            "preprocess.std=[0.2,0.2,0.2]"]))


@pytest.mark.ray
def test_colour_is_kept_by_default_and_the_card_records_the_resolved_spec(test_data, ray_cluster, tmp_path, caplog):
    colour, gray = colour_and_gray(test_data, tmp_path / "ds")
    base = [f"storage.root={tmp_path / 'store'}", "preprocess.size=16"]
    p = prepare(load_config(None, [*base, f"data.manifest={colour}"]))
    assert p.image_shape == (3, 16, 16) and p.spec.channels == 3 and p.card["spec"]["channels"] == 3
    X, _ = p.numpy("train")
    assert np.abs(X[:, 0] - X[:, 2]).max() > 0.05  # real colour, not gray copied three times
    # The key is a function of the resolved spec: 'auto' and an explicit 3 share the cache.
    p3 = prepare(load_config(None, [*base, f"data.manifest={colour}", "preprocess.channels=3"]))
    assert p3.hit and p3.key == p.key
    g = prepare(load_config(None, [*base, f"data.manifest={gray}"]))
    assert g.image_shape == (1, 16, 16) and g.card["spec"]["channels"] == 1
    with caplog.at_level(logging.WARNING, logger="medxfer.data"):
        one = prepare(load_config(None, [*base, f"data.manifest={colour}", "preprocess.channels=1"]))
    assert one.image_shape == (1, 16, 16) and one.key != p.key
    assert "10 of 10 images store colour and preprocess.channels is 1: they were converted to grayscale" in caplog.text


def test_channels_auto_samples_the_same_images_wherever_the_dataset_lies(tmp_path):
    """One colour image among 40 gray ones: whether the sample of 16 sees it must not depend on the
    folder the dataset was copied to (the sample once followed the resolved paths)."""
    from datautil import png, write_csv

    from medxfer import storage
    from medxfer.data.cache import resolve_channels

    src = tmp_path / "src"
    (src / "img").mkdir(parents=True)
    rows = []
    for i in range(41):
        img = np.full((8, 8), 40 + i, np.uint8)
        if i == 7:
            img = np.dstack([img, np.zeros_like(img), 255 - img])
        (src / "img" / f"{i}.png").write_bytes(png(img))
        rows.append({"path": f"img/{i}.png", "label": "ab"[i % 2], "split": "train" if i < 33 else "val"})
    write_csv(src, pd.DataFrame(rows))
    channels = set()
    for where in ("a", "site-b/data", "c/d/e", "xyz", "copy-2", "nested/again"):
        storage.copy_tree(str(src), str(tmp_path / where))
        cfg = load_config(None, [f"data.manifest={tmp_path / where / 'manifest.csv'}"])
        channels.add(resolve_channels(cfg).preprocess.channels)
    assert len(channels) == 1, channels
