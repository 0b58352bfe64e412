"""Operating points: the rule's target holds on validation, the threshold is the best one that reaches it,
and a rule that cannot be parsed, or a validation split with one class, is refused with a message."""

from __future__ import annotations

import numpy as np
import pytest

from medxfer.errors import ConfigError
from medxfer.metrics.operating_point import choose_operating_point, parse_rule, rates_at


@pytest.mark.parametrize("rule,check", [
    ("sensitivity>=0.9", lambda op: op.sensitivity >= 0.9),
    ("specificity>=0.85", lambda op: op.specificity >= 0.85),
    ("youden", lambda op: True),
    ("threshold=0.5", lambda op: op.threshold == 0.5),
])
def test_operating_point_meets_target_on_validation(binary, rule, check):
    y, s = binary(n=400, seed=9, sep=0.8)
    op = choose_operating_point(y, s, rule)
    assert check(op) and op.target_met
    sens, spec = rates_at(y, s, op.threshold)
    assert (sens, spec) == pytest.approx((op.sensitivity, op.specificity))
    if rule == "youden":
        best = max(sum(rates_at(y, s, t)) for t in np.unique(s))
        assert sens + spec == pytest.approx(best)
    if rule.startswith("sensitivity"):
        # The best specificity among thresholds that reach the target: one step up misses it.
        higher = np.unique(s[s > op.threshold])
        if higher.size:
            assert rates_at(y, s, higher[0])[0] < 0.9


def test_rules_parse_and_bad_ones_say_what_is_expected():
    assert parse_rule("youden") == ("youden", None)
    assert parse_rule(" sensitivity >= 0.95 ") == ("sensitivity", 0.95)
    assert parse_rule("threshold=1e-3") == ("threshold", 0.001)
    with pytest.raises(ValueError, match="'youden', 'sensitivity>=X'"):
        parse_rule("sens>0.9")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        parse_rule("sensitivity>=1.5")
    with pytest.raises(ValueError, match="a number"):
        parse_rule("specificity>=0.9.1")


def test_a_validation_split_with_one_class_is_refused():
    with pytest.raises(ConfigError, match="only positive cases"):
        choose_operating_point(np.ones(4, bool), np.arange(4.0), "youden")
    op = choose_operating_point(np.ones(4, bool), np.arange(4.0), "threshold=2")  # a fixed threshold still works
    assert op.sensitivity == 0.5 and np.isnan(op.specificity)


def test_tied_scores_meet_a_specificity_target_by_calling_nothing_positive():
    y = np.array([0, 0, 1, 1], bool)
    s = np.array([0.9, 0.9, 0.9, 0.9])
    op = choose_operating_point(y, s, "specificity>=0.99")
    assert op.specificity >= 0.99 and op.sensitivity == 0.0 and op.target_met
