"""Every public method class is registered and documented; the registry API behaves."""

from __future__ import annotations

import inspect

import pytest

import awloss
from awloss.weighting import Weighting


def public_method_classes():
    for name in awloss.__all__:
        obj = getattr(awloss, name)
        if inspect.isclass(obj) and hasattr(obj, "kind") and getattr(obj, "name", ""):
            yield obj


def test_every_public_method_class_is_registered():
    registered = {awloss.get_class(n) for n in awloss.available()}
    for cls in public_method_classes():
        assert cls in registered, f"{cls.__name__} is exported but not registered"


@pytest.mark.parametrize("name", awloss.available())
def test_docstring_follows_the_template(name):
    doc = inspect.getdoc(awloss.get_class(name)) or ""
    summary = doc.splitlines()[0] if doc else ""
    assert summary.endswith("."), f"{name}: the summary line should be one sentence"
    for section in ("Args:", "Example:", "References:", "Note:"):
        assert section in doc, f"{name}: docstring lacks {section!r}"
    assert "math::" in doc and "where:" in doc, f"{name}: docstring lacks the formula with a 'where:' list"


def test_lookup_is_forgiving_and_errors_are_clear():
    assert awloss.get_class("AWL") is awloss.AutomaticWeightedLoss
    assert awloss.get_class("automatic-weighted-loss") is awloss.AutomaticWeightedLoss
    assert awloss.get_class("kendall") is awloss.UncertaintyWeighting
    with pytest.raises(KeyError, match="Unknown method 'nope'; available: "):
        awloss.get("nope")
    with pytest.raises(ValueError, match="`kind` must be one of"):
        awloss.available("loss")
    assert set(awloss.available("weighting")) <= set(awloss.available())


def test_duplicate_names_are_refused():
    class Clash(Weighting):
        name = "uw"

    with pytest.raises(ValueError, match="already registered"):
        awloss.register(Clash)


def test_version():
    assert isinstance(awloss.__version__, str) and awloss.__version__.count(".") == 2
