"""The model card: typed wherever code reads it, and the same bytes and hash as the bundles already written."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from medxfer.config.loading import validate_dict
from medxfer.lifecycle.bundle import CARD, WEIGHTS, load_bundle, save_bundle
from medxfer.lifecycle.card import Lineage, ModelCard, card_bytes, card_digest, seal
from medxfer.lifecycle.card_builder import build_card

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "bundles"
INPUTS = json.loads((GOLDEN / "inputs.json").read_text())
KINDS = ("source", "finetune", "pretrain")


@pytest.mark.parametrize("kind", KINDS)
def test_bundles_written_before_the_typed_card_load_and_reserialise_unchanged(kind, tmp_path):
    """A bundle written by medxfer c124b5c (tests/golden/bundles) loads into the typed card, whose canonical
    JSON is the file's bytes and whose hash is the stored card_sha256; saved again, the bundle is the same
    bytes, so a bundle written now also loads in that older medxfer."""
    folder = GOLDEN / kind
    written = (folder / CARD).read_bytes()
    b = load_bundle(str(folder))
    assert isinstance(b.card, ModelCard) and isinstance(b.card.lineage, Lineage)
    assert card_digest(b.card) == b.card.card_sha256 == json.loads(written)["card_sha256"]
    assert card_bytes(b.card) == written
    again = save_bundle(str(tmp_path / kind), b.state_dict, b.card)
    assert again == b.card
    assert (tmp_path / kind / CARD).read_bytes() == written
    assert (tmp_path / kind / WEIGHTS).read_bytes() == (folder / WEIGHTS).read_bytes()


def test_golden_cards_read_as_attributes():
    """What code reads from a card, read as typed attributes from cards written by an older medxfer."""
    source, finetune, pretrain = (load_bundle(str(GOLDEN / k)) for k in KINDS)
    assert (source.card.positive_class, source.card.positive_class_source) == ("pneumonia", "data.positive_class")
    assert finetune.card.lineage.stage == "finetune" and finetune.card.lineage.source_bundle_id == source.id
    assert finetune.card.lineage.source_card_sha256 == source.card_sha256
    assert finetune.card.lineage.source_lineage == source.card.lineage.model_dump(mode="json")
    assert finetune.card.preprocess.size == 28 and finetune.card.input.shape == (1, 28, 28)
    assert finetune.card.config["model"]["init"] == finetune.card.lineage.source_uri
    assert pretrain.card.task == "self-supervised" and pretrain.card.num_outputs == 0
    assert pretrain.card.lineage.method == "simsiam" and pretrain.card.pretraining["images"] == 22
    with pytest.raises(TypeError):
        source.card["task"]  # noqa: B018 - a card is not a dict: string keys fail where they are written
    assert not hasattr(source.card, "get")


def _built(kind: str, source=None) -> ModelCard:
    run = INPUTS[kind]
    cfg = validate_dict(run["config"])
    if kind == "pretrain":
        from medxfer.ssl.pretrain import build_card as pretrain_card

        return pretrain_card(cfg, run["sources"], SimpleNamespace(**run["plan"]), run["final"])
    b = dict(run["build"])
    return build_card(cfg, run["stage"], plan=SimpleNamespace(**b.pop("plan")), spec=cfg.preprocess,
                      positive=tuple(b.pop("positive")), source=source, **b)


def test_builder_makes_the_cards_the_older_builder_made():
    """From the inputs the golden bundles were built from, today's builder (now beside the run, not in the
    schema module) makes the same cards: once the creation time and package versions are those of the golden
    card, sealing gives the same id and card_sha256."""
    source = load_bundle(str(GOLDEN / "source"))
    for kind, src in (("source", None), ("finetune", source), ("pretrain", None)):
        golden = load_bundle(str(GOLDEN / kind)).card
        built = _built(kind, src)
        built = built.model_copy(update={"created": golden.created, "versions": golden.versions,
                                         "config": _keys_of(built.config, golden.config)})
        assert seal(built, golden.weights_sha256, {}, kind) == golden, kind


def _keys_of(config: dict, older: dict) -> dict:
    """``config`` with only the keys an older card's config has: a config field added since the golden
    bundles were written (``failure.watchdog_s``, ...) is recorded in new cards, which is not a change of
    what the builder makes from the same inputs."""
    return {k: _keys_of(v, older[k]) if isinstance(v, dict) and isinstance(older[k], dict) else v
            for k, v in config.items() if k in older}


def test_seal_hashes_what_is_written_and_keeps_an_id():
    """Sealing fills what a bundle adds (format, hashes, id, versions) and nothing a caller set."""
    card = _built("source")
    sealed = seal(card, "ab" * 32, {"medxfer": "0"}, "c")
    assert sealed.id == f"pneumonia@{'ab' * 6}" and sealed.versions == {"medxfer": "0"}
    assert sealed.card_sha256 == card_digest(json.loads(card_bytes(sealed)))
    named = seal(card.model_copy(update={"id": "mine", "versions": {"torch": "x"}}), "cd" * 32, {"medxfer": "0"}, "c")
    assert (named.id, named.versions) == ("mine", {"torch": "x"})


# ----------------------------------------------------------------------------- no string keys

_KEY_READS = ("get", "pop", "setdefault")


def _card_key_reads(source: str) -> list[int]:
    """Lines of ``source`` that read a model card by string key.

    The rule: outside ``medxfer/lifecycle/card.py`` (the card's own (de)serialisation) no code
    subscripts, ``.get``/``.pop``/``.setdefault``s or ``in``-tests an expression that is a model
    card as a dict. Such an expression is (1) a name or attribute called ``card`` — the name
    medxfer gives the model card everywhere; the dataset card (``PreparedData.card``,
    ``dataset.json``) too, which outside its own package (``medxfer/data/cache/``) is read through
    ``PreparedData``'s typed accessors (``rows``, ``cached_rows``, ``bad_file_count``, ...) — or (2) a
    dict made from a card: ``card_json(...)``,
    ``<card>.model_dump(...)``, ``read_card(...)``, or a name assigned from one of those. Fields
    of a card that are dicts by design (``card.config["model"]``, ``card.metrics["epoch"]``) are
    attributes, not the card, so they pass. The typed card itself cannot be read by key at run
    time (:class:`ModelCard` is not subscriptable): what this catches is a card turned back into
    a dict, and a ``card`` variable that was never typed.
    """
    tree = ast.parse(source)
    dicts: set[str] = set()

    def is_card(e: ast.expr) -> bool:
        if isinstance(e, ast.Name):
            return e.id == "card" or e.id in dicts
        if isinstance(e, ast.Attribute) and e.attr == "card":
            return True
        if isinstance(e, ast.Call):
            f = e.func
            if isinstance(f, ast.Name) and f.id in ("card_json", "read_card"):
                return True
            return isinstance(f, ast.Attribute) and (f.attr == "read_card" or (
                f.attr in ("model_dump", "dict") and is_card(f.value)))
        return False

    for node in ast.walk(tree):  # names bound to a card's dict
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and is_card(node.value):
            dicts |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and is_card(node.value):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in _KEY_READS and is_card(node.func.value):
            lines.append(node.lineno)
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) and \
                any(is_card(c) for c in node.comparators):
            lines.append(node.lineno)
    return sorted(set(lines))


@pytest.mark.parametrize(("code", "bad"), [
    ('x = bundle.card["task"]', True),
    ('x = load_bundle(u).card.get("positive_class")', True),
    ('d = b.card.model_dump(mode="json")\nx = d["lineage"]', True),
    ('raw = read_card(u)\nok = raw.get("format") == "x"', True),
    ('def f(card: dict):\n    return card["classes"]', True),
    ('x = "operating_point" in bundle.card', True),
    ('x = card_json(c)["id"]', True),
    ('x = bundle.card.task, bundle.card.config["model"], card.metrics["epoch"]', False),
    ('def f(prepared: PreparedData):\n    return prepared.card["counts"]', True),
    ('p = prepare(cfg)\nx = p.card["input_rows"]', True),
    ('def f(prepared: PreparedData):\n    return prepared.cached_rows("train"), prepared.bad_file_count', False),
    ('d = cfg.model_dump()\nx = d["name"]', False),
])
def test_the_string_key_rule_finds_what_it_should(code, bad):
    assert bool(_card_key_reads(code)) == bad


def test_no_module_reads_a_card_by_string_key():
    """Everywhere in medxfer/ and jobs/ but the cards' own modules, a model card is read by attribute and a
    dataset card through ``PreparedData`` (see :func:`_card_key_reads` for the exact rule)."""
    own = REPO / "medxfer" / "lifecycle" / "card.py"
    found = {}
    for path in sorted([*(REPO / "medxfer").rglob("*.py"), *(REPO / "jobs").rglob("*.py")]):
        if path == own or path.is_relative_to(REPO / "medxfer" / "data" / "cache"):
            continue  # data/cache/ is the dataset card's own package: its `card` is dataset.json
        lines = _card_key_reads(path.read_text(encoding="utf-8"))
        if lines:
            found[str(path.relative_to(REPO))] = lines
    assert not found, f"card read by string key (use the model card's attributes, PreparedData's accessors): {found}"
