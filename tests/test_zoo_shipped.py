"""The pretrained models shipped in fermetric/zoo/models: each loads, matches its SHA-256, has a
complete card, and reproduces its card's PublicTest accuracy on FER2013 (skipped where the shared
data is absent)."""
from __future__ import annotations

import pytest

from fermetric.zoo import list_pretrained, load_pretrained
from fermetric.zoo.registry import ZOO_ROOT

SHIPPED = list_pretrained(ZOO_ROOT)
CARD_KEYS = {"name", "kind", "model", "data", "split", "recipe", "seed", "retrain", "sha256", "size_bytes",
             "train_minutes", "machine", "test"}

pytestmark = pytest.mark.skipif(not SHIPPED, reason=f"no pretrained model is shipped in {ZOO_ROOT} yet")


@pytest.mark.parametrize("entry", SHIPPED, ids=[e.name for e in SHIPPED])
def test_entry_loads_with_a_complete_card(entry):
    assert entry.verify() == entry.card["sha256"]
    assert CARD_KEYS <= set(entry.card), CARD_KEYS - set(entry.card)
    assert entry.card["size_bytes"] < 10e6, "the zoo must stay small enough to ship in the wheel"
    run = load_pretrained(entry.name, device="cpu", precision="fp32", root=ZOO_ROOT)
    assert run.kind == entry.kind and len(run.class_names) == 7


@pytest.mark.parametrize("entry", SHIPPED, ids=[e.name for e in SHIPPED])
def test_entry_reproduces_its_card_on_fer2013_publictest(entry, fer2013_dev_csv):
    run = load_pretrained(entry.name, device="cpu", precision="fp32", root=ZOO_ROOT)
    y = run.use_data(fer2013_dev_csv)["val"].labels.numpy()
    acc = float((run.predict("val") == y).mean())
    assert acc == pytest.approx(entry.card["test"]["accuracy"], abs=1e-9)
