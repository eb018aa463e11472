import math

import pytest
import torch

from evoopt import shaping


def test_centered_rank_values_and_ties():
    u = torch.tensor([3.0, 1.0, 2.0, 1.0])
    torch.testing.assert_close(shaping.centered_rank(u), torch.tensor([0.5, -0.5, 1 / 6, -1 / 6]))
    assert float(shaping.centered_rank(torch.tensor([4.0]))) == 0.0


def test_standardize_matches_formula():
    u = torch.tensor([1.0, 2.0, 4.0, 9.0], dtype=torch.float64)
    ref = (u - u.mean()) / (u.std(unbiased=False) + 1e-8)
    torch.testing.assert_close(shaping.standardize(u), ref)


def test_nes_utilities_match_paper_formula():
    # Wierstra et al. 2014, eq. (11), computed by hand for P = 4
    u = torch.tensor([0.3, 0.1, 0.4, 0.2], dtype=torch.float64)
    raw = [max(0.0, math.log(4 / 2 + 1) - math.log(k)) for k in range(1, 5)]
    w = [r / sum(raw) - 1 / 4 for r in raw]  # by rank: best first
    expected = torch.tensor([-w[2], -w[0], -w[3], -w[1]], dtype=torch.float64)
    torch.testing.assert_close(shaping.nes_utilities(u), expected)
    assert float(shaping.nes_utilities(u).sum()) == pytest.approx(0.0, abs=1e-12)


def test_elite_weights():
    u = torch.tensor([5.0, 1.0, 3.0, 2.0, 4.0], dtype=torch.float64)
    w = shaping.elite_weights(u, 2, "equal")
    torch.testing.assert_close(w, torch.tensor([0, 0.5, 0, 0.5, 0], dtype=torch.float64))
    w = shaping.elite_weights(u, 3, "log")
    raw = torch.tensor([math.log(3.5) - math.log(k) for k in (1, 2, 3)], dtype=torch.float64)
    raw = raw / raw.sum()
    torch.testing.assert_close(w, torch.tensor([0, raw[0], raw[2], raw[1], 0], dtype=torch.float64))
    with pytest.raises(ValueError, match="Invalid mu: 6"):
        shaping.elite_weights(u, 6)
    with pytest.raises(ValueError, match="Invalid kind: 'cubic'"):
        shaping.elite_weights(u, 2, "cubic")
