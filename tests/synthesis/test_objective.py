"""Objectives: parsing, loss and score."""
import numpy as np
import pytest
import torch

from daenr_fast.synthesis.objective import Objective, parse_objective, select_best


def test_parse_max_and_target():
    assert parse_objective("max") == Objective("max")
    assert parse_objective(" target:2.5 ") == Objective("target", 2.5)
    assert parse_objective("target:0").target == 0.0
    assert parse_objective("target:2.5").label == "target:2.5"


@pytest.mark.parametrize("text,message", [
    ("min", "'max' or 'target:RATE'"), ("target:", "needs a number"), ("target:x", "needs a number"),
    ("target:-1", "RATE >= 0"), ("target:nan", "RATE >= 0"), ("target:inf", "RATE >= 0"), (3, "--objective"),
])
def test_bad_objectives_name_the_option(text, message):
    with pytest.raises(ValueError, match="--objective") as info:
        parse_objective(text)
    assert message in str(info.value)


def test_loss_and_score():
    z = torch.tensor([-1.0, 0.5, 2.0])
    rate = torch.tensor([0.4, 1.5, 3.0])
    assert torch.equal(Objective("max").loss(z, rate), -z)
    assert torch.equal(Objective("max").score(rate), rate)
    target = Objective("target", 1.0)
    assert torch.allclose(target.loss(z, rate), torch.tensor([0.36, 0.25, 4.0]))
    assert np.allclose(target.score(np.array([0.4, 1.5, 3.0])), [-0.6, -0.5, -2.0])


def test_select_best_is_per_neuron():
    scores = torch.tensor([0.1, 0.9, 0.3, 0.7, 0.2, 0.5])   # 3 neurons x 2 restarts
    assert select_best(scores, 2).tolist() == [1, 1, 1]
    assert select_best(scores, 3).tolist() == [1, 0]
