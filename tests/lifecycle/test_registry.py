"""Registry: promotion rule, immutability, racing promotions and crash consistency (local and S3)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from evalutil import report, tiny_bundle

from medxfer import storage
from medxfer.cli import main
from medxfer.config import PromotionSection
from medxfer.errors import RegistryError
from medxfer.lifecycle.model_registry import Registry, decide

RULE = PromotionSection(metric="auroc", margin=0.005, no_sensitivity_drop=True)


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    return str(tmp_path / "store") if request.param == "local" else request.getfixturevalue("s3_root")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    base = tmp_path_factory.mktemp("bundles")
    out = []
    for i in range(3):
        uri = str(base / f"b{i}")
        tiny_bundle(uri, seed=i)
        out.append(uri)
    return out


def test_decide_rule():
    assert decide(report(0.80, 0.9), None, RULE)[0]
    ok, why = decide(report(0.803, 0.95), report(0.80, 0.9), RULE)
    assert not ok and "margin" in why
    ok, why = decide(report(0.85, 0.85), report(0.80, 0.9), RULE)
    assert not ok and "sensitivity" in why
    assert decide(report(0.85, 0.90), report(0.80, 0.9), RULE)[0]
    ok, why = decide(report(0.95, 0.95, "other"), report(0.80, 0.9), RULE)
    assert not ok and "different holdouts" in why
    lax = PromotionSection(margin=0.0, no_sensitivity_drop=False)
    assert decide(report(0.85, 0.5), report(0.85, 0.9), lax)[0]
    mae = PromotionSection(metric="mae", margin=0.1)
    lower = {"metrics": {"mae": {"value": 0.3}}}
    assert decide(lower, {"metrics": {"mae": {"value": 0.5}}}, mae)[0]
    assert not decide(lower, {"metrics": {"mae": {"value": 0.35}}}, mae)[0]


def test_first_champion_worse_refused_better_promoted(root, bundles):
    reg = Registry(root, "breast")
    assert reg.champion() is None
    v1 = reg.register(bundles[0], report(0.80, 0.90))
    r = reg.try_promote(v1, RULE)
    assert r["promoted"] and r["champion"] == v1 and r["generation"] == 1
    v2 = reg.register(bundles[1], report(0.803, 0.95))  # inside the margin
    assert not reg.try_promote(v2, RULE)["promoted"]
    v3 = reg.register(bundles[1], report(0.85, 0.85))  # better AUROC, lower sensitivity
    r3 = reg.try_promote(v3, RULE)
    assert not r3["promoted"] and "sensitivity" in r3["reason"]
    assert reg.champion()["version"] == v1
    v4 = reg.register(bundles[2], report(0.86, 0.92))
    r4 = reg.try_promote(v4, RULE)
    assert r4["promoted"] and r4["compared_with"] == v1
    ch = reg.champion()
    assert ch["version"] == v4 and ch["previous"] == v1 and ch["generation"] == 2
    assert storage.read_json(storage.join(reg.uri, "champion.json"))["version"] == v4
    assert [v["version"] for v in reg.list_versions()] == [v1, v2, v3, v4]
    # Versions are immutable: the completion record cannot be written twice.
    assert not storage.put_if_absent(storage.join(reg.version_uri(v4), "version.json"), b"{}")
    # The registry's bundle copy verifies and names the source weights.
    from medxfer.lifecycle.bundle import load_bundle

    assert load_bundle(reg.bundle_uri(v4)).card.weights_sha256 == reg.get(v4)["weights_sha256"]


def test_concurrent_promotions_leave_exactly_one_winner(root, bundles):
    reg = Registry(root, "race")
    v0 = reg.register(bundles[0], report(0.70, 0.9))
    reg.try_promote(v0, RULE)
    contenders = [reg.register(bundles[1 + i % 2], report(0.90, 0.95)) for i in range(6)]
    barrier = threading.Barrier(len(contenders))

    def cas(v):  # each decides against promotion 1; one compare-and-swap wins, the others decide again
        barrier.wait()
        return v if reg.try_promote(v, RULE)["promoted"] else None

    with ThreadPoolExecutor(len(contenders)) as ex:
        winners = [w for w in ex.map(cas, contenders) if w]
    assert len(winners) == 1
    assert reg.generations() == [1, 2] and reg.champion()["version"] == winners[0]

    # Deciding racers: equally good challengers; after one wins the others must re-decide
    # against it (no margin over an equal model) and be refused.
    more = [reg.register(bundles[i % 3], report(0.95, 0.96)) for i in range(5)]
    barrier2 = threading.Barrier(len(more))

    def racer(v):
        barrier2.wait()
        return reg.try_promote(v, RULE)

    with ThreadPoolExecutor(len(more)) as ex:
        results = list(ex.map(racer, more))
    promoted = [r for r in results if r["promoted"]]
    assert len(promoted) == 1
    assert reg.generations() == [1, 2, 3]
    assert reg.champion()["version"] == promoted[0]["champion"]
    assert storage.read_json(storage.join(reg.uri, "champion.json"))["generation"] == 3


def test_crash_between_version_and_pointer_stays_consistent(root, bundles):
    reg = Registry(root, "crash")
    v1 = reg.register(bundles[0], report(0.80, 0.9))
    reg.try_promote(v1, RULE)
    # 1) Crash after the version was written, before any promotion: old champion stays.
    v2 = reg.register(bundles[1], report(0.90, 0.95))
    assert reg.champion()["version"] == v1
    assert storage.read_json(storage.join(reg.uri, "champion.json"))["version"] == v1
    # 2) Crash after the promotion record, before champion.json moved: the record decides,
    #    the stale pointer is repaired by the next reader that syncs.
    assert reg._claim(v2, {"reason": "crash test"}, 1) is not None
    assert storage.read_json(storage.join(reg.uri, "champion.json"))["version"] == v1
    assert reg.champion()["version"] == v2
    assert reg.sync_pointer()["version"] == v2
    assert storage.read_json(storage.join(reg.uri, "champion.json"))["version"] == v2
    # 3) Crash in the middle of a registration (id claimed, copy partial, no version.json):
    #    never listed, never promotable, and its id is not reused.
    broken = reg._claim_version()
    storage.write_bytes(storage.join(reg.bundle_uri(broken), "model.safetensors"), b"partial")
    assert broken not in [v["version"] for v in reg.list_versions()]
    with pytest.raises(RegistryError, match="never completed"):
        reg.try_promote(broken, RULE, force=True)
    v4 = reg.register(bundles[2], report(0.95, 0.96))
    assert v4 != broken and reg.try_promote(v4, RULE)["promoted"]
    assert reg.champion()["generation"] == 3


def test_cli_registry_promote_list_show(tmp_path, bundles, capsys):
    root = str(tmp_path / "store")
    rep = tmp_path / "rep.json"
    rep.write_text(json.dumps(report(0.8, 0.9)))
    assert main(["registry", "promote", "m1", "--bundle", bundles[0], "--report", str(rep), "--root", root]) == 0
    assert "PROMOTED" in capsys.readouterr().out
    rep.write_text(json.dumps(report(0.801, 0.9)))
    assert main(["registry", "promote", "m1", "--bundle", bundles[1], "--report", str(rep), "--root", root]) == 0
    assert "not promoted" in capsys.readouterr().out
    assert main(["registry", "list", "m1", "--root", root]) == 0
    out = capsys.readouterr().out
    assert "* v0001" in out and "  v0002" in out
    assert main(["registry", "show", "m1", "--root", root]) == 0
    assert json.loads(capsys.readouterr().out)["champion"]["version"] == "v0001"
    # No report and no --force: a clear error, exit 1.
    assert main(["registry", "promote", "m1", "--bundle", bundles[2], "--root", root]) == 1
    assert "evaluate" in capsys.readouterr().err


def _swap_classes(bundle_dir: str, rehash: bool) -> None:
    uri = storage.join(bundle_dir, "bundle.json")
    card = storage.read_json(uri)
    card["classes"] = card["classes"][::-1]
    if rehash:
        from medxfer.lifecycle.card import card_digest

        card["card_sha256"] = card_digest(card)
    storage.write_json(uri, card)


def test_an_edited_card_is_never_registered_promoted_or_used(tmp_path, capsys):
    """Swapped class names flip every decision. A card edited in place fails its own hash; one whose hash was
    recomputed too fails the hash the registry recorded when the version was made."""
    root = str(tmp_path / "store")
    rep = tmp_path / "rep.json"
    rep.write_text(json.dumps(report(0.8, 0.9)))
    edited = str(tmp_path / "edited")
    tiny_bundle(edited)
    _swap_classes(edited, rehash=False)
    assert main(["registry", "promote", "m", "--bundle", edited, "--report", str(rep), "--root", root]) == 2
    assert "card_sha256" in capsys.readouterr().err
    assert Registry(root, "m").list_versions(include_incomplete=True) == []
    # A registered version whose copy is edited afterwards, hash and all.
    good = str(tmp_path / "good")
    tiny_bundle(good)
    reg = Registry(root, "m")
    v = reg.register(good, report(0.8, 0.9))
    assert reg.get(v)["card_sha256"] == storage.read_json(storage.join(good, "bundle.json"))["card_sha256"]
    _swap_classes(reg.bundle_uri(v), rehash=True)
    for force in (False, True):
        with pytest.raises(RegistryError, match="not the one registered"):
            reg.try_promote(v, RULE, force=force)
    assert reg.champion() is None
    capsys.readouterr()
    assert main(["predict", "--registry-version", f"m:{v}", "--root", root, "--input", str(tmp_path),
                 "--output", str(tmp_path / "pred")]) == 1
    assert "not the one registered" in capsys.readouterr().err and not (tmp_path / "pred").exists()


def test_version_and_model_names_are_checked_on_every_read(tmp_path, bundles, capsys):
    root = tmp_path / "store"
    reg = Registry(str(root), "m")
    reg.register(bundles[0], report(0.8, 0.9))
    # A version.json outside the registry that a path like ../../x would reach.
    outside = root / "registry" / "x"
    outside.mkdir(parents=True)
    (outside / "version.json").write_text(json.dumps({"version": "planted"}))
    capsys.readouterr()
    for bad in ("../../x", "../x", "v1", "v0001/../../x", "/etc"):
        assert main(["registry", "show", "m", "--version", bad, "--root", str(root)]) == 2, bad
        err = capsys.readouterr().err
        assert "not a version name" in err and "planted" not in err
    assert main(["registry", "show", "../m", "--root", str(root)]) == 2
    assert "model name" in capsys.readouterr().err
    with pytest.raises(RegistryError, match="not a version name"):
        reg.bundle_uri("../../x")
    # A champion record naming a version outside the pattern is refused when it is used, too.
    reg._claim("../../x", {"reason": "planted"}, 0)
    with pytest.raises(RegistryError, match="not a version name"):
        reg.try_promote("v0001", RULE)


def test_model_name_in_the_config_has_the_run_name_pattern():
    from medxfer.config.loading import validate_dict
    from medxfer.errors import ConfigError

    for bad in ("../x", "a/b", "", ".hidden", "x" * 129):
        with pytest.raises(ConfigError, match="model.name"):
            validate_dict({"model": {"name": bad}})
    assert validate_dict({"model": {"name": "breast-v2.1_a"}}).model.name == "breast-v2.1_a"


def test_registry_list_ignores_stray_entries(tmp_path, bundles, capsys):
    root = tmp_path / "store"
    Registry(str(root), "breast").register(bundles[0], report(0.8, 0.9))
    reg_dir = root / "registry"
    (reg_dir / "notes.txt").write_text("not a model")
    (reg_dir / ".DS_Store").write_text("")
    (reg_dir / "tmp").mkdir()  # a folder without versions
    (reg_dir / "bad name").mkdir()
    (reg_dir / "bad name" / "versions").mkdir()
    capsys.readouterr()
    assert main(["registry", "list", "--root", str(root)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("breast\tversions=1")
