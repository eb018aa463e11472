import math

import pytest
import torch

from evoopt import shaping


def test_centered_rank_values_and_ties():
    u = torch.tensor([3.0, 1.0, 2.0, 1.0])
    # the tied 1.0s share ranks 0 and 1 (issue 12, item 17; was [.., -0.5, .., -1/6] by index)
    torch.testing.assert_close(shaping.centered_rank(u), torch.tensor([0.5, -1 / 3, 1 / 6, -1 / 3]))
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


# ------------------------------------------------------------ ties (issue 12, item 17)
TIED = [
    torch.tensor([2.0, 1.0, 2.0, 0.0, 2.0, 1.0], dtype=torch.float64),
    torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64),
    torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0], dtype=torch.float64),  # 0-1 losses
]


@pytest.mark.parametrize("u", TIED, ids=["mixed", "plateau", "zero_one"])
def test_ranks_average_ties_like_a_plain_reference(u):
    from ._helpers import centered_rank_reference

    vals = u.tolist()
    expected = [sum(w < v for w in vals) + (sum(w == v for w in vals) - 1) / 2 for v in vals]
    assert shaping.ranks(u).tolist() == expected
    torch.testing.assert_close(shaping.centered_rank(u), centered_rank_reference(u))


@pytest.mark.parametrize("fn", [shaping.centered_rank, shaping.nes_utilities,
                                lambda u: shaping.elite_weights(u, 2),
                                lambda u: shaping.elite_weights(u, 3, "equal")],
                         ids=["centered_rank", "nes", "elite_log", "elite_equal"])
@pytest.mark.parametrize("u", TIED, ids=["mixed", "plateau", "zero_one"])
def test_shaping_does_not_depend_on_the_order_of_tied_members(fn, u):
    perm = torch.randperm(len(u), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(fn(u[perm]), fn(u)[perm], rtol=0, atol=1e-15)
    a = fn(u)
    for i in range(len(u)):  # tied members get the same value
        for j in range(len(u)):
            if u[i] == u[j]:
                assert a[i] == a[j]


def test_an_exact_plateau_shapes_to_zero_and_elite_weights_spread():
    u = torch.full((6,), 3.5, dtype=torch.float64)
    assert torch.equal(shaping.centered_rank(u), torch.zeros(6, dtype=torch.float64))
    assert torch.equal(shaping.nes_utilities(u), torch.zeros(6, dtype=torch.float64))
    torch.testing.assert_close(shaping.elite_weights(u, 2), torch.full((6,), 1 / 6,
                                                                        dtype=torch.float64))


def test_nes_utilities_average_the_utilities_of_tied_positions():
    u = torch.tensor([0.3, 0.1, 0.1, 0.2], dtype=torch.float64)
    raw = [max(0.0, math.log(4 / 2 + 1) - math.log(k)) for k in range(1, 5)]
    w = [r / sum(raw) - 1 / 4 for r in raw]
    tie = (w[0] + w[1]) / 2  # members 1 and 2 share the two best positions
    expected = torch.tensor([-w[3], -tie, -tie, -w[2]], dtype=torch.float64)
    torch.testing.assert_close(shaping.nes_utilities(u), expected)


def test_elite_weights_share_the_cut_between_tied_members():
    u = torch.tensor([5.0, 1.0, 3.0, 3.0, 4.0], dtype=torch.float64)
    # mu = 2: member 1 is best; members 2 and 3 tie for the second place
    torch.testing.assert_close(shaping.elite_weights(u, 2, "equal"),
                               torch.tensor([0, 0.5, 0.25, 0.25, 0], dtype=torch.float64))
