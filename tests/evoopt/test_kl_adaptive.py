"""KLAdaptive: the lr rule, sharing of param groups, exact resume, and KL tracking on a policy."""

import io
import math

import pytest
import torch

from evoopt.gradient import KLAdaptive


def _quad_params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.Parameter(torch.randn(5, generator=g, dtype=torch.float64))


def test_is_an_optimizer_sharing_the_inner_groups_and_state():
    w = _quad_params()
    inner = torch.optim.Adam([w], lr=1e-3)
    opt = KLAdaptive(inner, target_kl=0.01)
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups is inner.param_groups and opt.state is inner.state
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    (w ** 2).sum().backward()
    opt.step()
    sched.step()
    assert inner.param_groups[0]["lr"] == pytest.approx(5e-4)


@pytest.mark.parametrize("kl,expected", [
    (0.05, 1e-3 / 1.5),     # > 2 * target: decrease
    (0.0201, 1e-3 / 1.5),
    (0.02, 1e-3),           # on the band's edge: keep
    (0.01, 1e-3),
    (0.005, 1e-3),
    (0.0049, 1e-3 * 1.5),   # < target / 2: increase
    (0.0, 1e-3 * 1.5),
])
def test_lr_rule(kl, expected):
    opt = KLAdaptive([_quad_params()], target_kl=0.01, lr=1e-3)
    assert isinstance(opt.optimizer, torch.optim.Adam)
    assert opt.update_kl(kl) == pytest.approx(expected, rel=1e-12)


def test_lr_bounds_and_all_groups():
    a, b = _quad_params(0), _quad_params(1)
    opt = KLAdaptive(torch.optim.SGD([{"params": [a], "lr": 1e-3}, {"params": [b], "lr": 4e-3}]),
                     target_kl=0.01, lr_min=5e-4, lr_max=5e-3)
    opt.update_kl(1.0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3 / 1.5, 4e-3 / 1.5])
    for _ in range(10):
        opt.update_kl(1.0)
    assert [g["lr"] for g in opt.param_groups] == [5e-4, 5e-4]
    for _ in range(20):
        opt.update_kl(0.0)
    assert [g["lr"] for g in opt.param_groups] == [5e-3, 5e-3]
    assert (opt.num_decreases, opt.num_increases) == (11, 20)


def test_closure_returning_loss_and_kl_steps_like_the_inner_optimizer():
    w1, w2 = _quad_params(), _quad_params()
    ref = torch.optim.Adam([w1], lr=1e-2)
    opt = KLAdaptive(torch.optim.Adam([w2], lr=1e-2), target_kl=0.01, lr_max=1.0)

    def closure_ref():
        ref.zero_grad()
        loss = (w1 ** 2).sum()
        loss.backward()
        return loss

    def closure():
        opt.zero_grad()
        loss = (w2 ** 2).sum()
        loss.backward()
        return loss, 0.0  # report a tiny KL: lr goes up after the step

    l1, l2 = ref.step(closure_ref), opt.step(closure)
    assert l1.item() == l2.item()
    torch.testing.assert_close(w1, w2, rtol=0, atol=0)
    assert opt.lr == pytest.approx(1.5e-2) and opt.last_kl == 0.0


def _train_policy(opt, logits, target_probs, steps):
    """Categorical policy pulled toward a target distribution; report KL(old || new) per step."""
    kls = []
    for _ in range(steps):
        old = torch.log_softmax(logits.detach(), -1)
        opt.zero_grad()
        loss = -(target_probs * torch.log_softmax(logits, -1)).sum()
        loss.backward()
        opt.step()
        new = torch.log_softmax(logits.detach(), -1)
        kl = float((old.exp() * (old - new)).sum())
        kls.append(kl)
        opt.update_kl(kl)
    return kls


def test_keeps_the_measured_kl_in_the_band():
    logits = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))
    target = torch.softmax(
        torch.tensor([3.0, -2.0, 0.0, 1.0, -1.0, 2.0], dtype=torch.float64) * 3, -1)
    opt = KLAdaptive(torch.optim.SGD([logits], lr=1e-5), target_kl=1e-3, lr_min=1e-6, lr_max=1e3)
    kls = _train_policy(opt, logits, target, 60)
    # from lr 1e-5 the KL starts ~1e-12 and the lr grows by 1.5 per step until the band is reached
    assert kls[0] < 1e-9
    in_band = [1e-3 / 2 <= k <= 2e-3 for k in kls[30:]]
    assert sum(in_band) >= 25, kls[30:]


def test_state_dict_resumes_exactly_and_loads_weights_only():
    target = torch.softmax(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), -1)

    def make():
        logits = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
        return logits, KLAdaptive(torch.optim.Adam([logits], lr=1e-3), target_kl=1e-4, lr_max=1.0)

    la, oa = make()
    _train_policy(oa, la, target, 20)
    buf = io.BytesIO()
    torch.save({"opt": oa.state_dict(), "logits": la.detach().clone()}, buf)
    full = _train_policy(oa, la, target, 15)

    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    lb, ob = make()
    with torch.no_grad():
        lb.copy_(ck["logits"])
    ob.load_state_dict(ck["opt"])
    assert ob.param_groups is ob.optimizer.param_groups
    resumed = _train_policy(ob, lb, target, 15)
    assert resumed == full
    torch.testing.assert_close(la, lb, rtol=0, atol=0)
    assert ((ob.lr, ob.num_increases, ob.num_decreases)
            == (oa.lr, oa.num_increases, oa.num_decreases))


@pytest.mark.parametrize("kwargs,match", [
    (dict(target_kl=0.0), "Invalid target_kl: 0.0"),
    (dict(target_kl=-1.0), "Invalid target_kl"),
    (dict(factor=1.0), "Invalid factor: 1.0 .expected a finite number > 1"),
    (dict(threshold=0.5), "Invalid threshold: 0.5"),
    # regression: float() accepted strings and bools, and None raised a bare TypeError
    (dict(factor="2"), r"Invalid factor: '2' \(expected a finite number > 1\)"),
    (dict(factor=None), r"Invalid factor: None \(expected a finite number > 1\)"),
    (dict(threshold=True), r"Invalid threshold: True \(expected a finite number > 1\)"),
    (dict(lr_min=0.0), "Invalid lr_min: 0.0"),
    (dict(lr_min=1e-2, lr_max=1e-3), r"Invalid lr_min: 0.01 \(expected <= lr_max=0.001\)"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KLAdaptive([_quad_params()], **kwargs)


def test_bad_kl_and_bad_checkpoint():
    opt = KLAdaptive([_quad_params()])
    with pytest.raises(ValueError, match="Invalid kl: nan"):
        opt.update_kl(math.nan)
    with pytest.raises(ValueError, match="expected a state_dict saved by KLAdaptive"):
        opt.load_state_dict(torch.optim.Adam([_quad_params()]).state_dict())
    with pytest.raises(ValueError, match="Invalid optimizer_kwargs"):
        KLAdaptive(torch.optim.Adam([_quad_params()]), lr=1e-3)


def test_wraps_an_evolution_strategy_and_adapts_its_lr_to_the_search_distribution_kl():
    # OpenAI-ES with fixed sigma:
    # KL(N(m_old, s^2 I) || N(m_new, s^2 I)) = |m_new - m_old|^2 / (2 s^2)
    import evoopt

    x = torch.nn.Parameter(torch.full((10,), 3.0, dtype=torch.float64))
    sigma = 0.1
    es = evoopt.OpenAIES([x], popsize=20, lr=1e-4, sigma=sigma, seed=0)
    opt = KLAdaptive(es, target_kl=0.05, lr_min=1e-5, lr_max=1.0)
    assert opt.param_groups is es.param_groups

    def objective(pop):  # a population objective passes straight through to the ES
        return (pop.flat ** 2).sum(1)

    kls = []
    for _ in range(60):
        old = es.mean.clone()
        opt.step(objective)
        kl = float(((es.mean - old) ** 2).sum() / (2 * sigma**2))
        kls.append(kl)
        opt.update_kl(kl)
    assert kls[0] < 0.05 / 2 and opt.num_increases > 0
    # after the warm-up the per-generation KL stays in [target / 2, 2 target] and the ES descends
    assert sum(0.025 <= k <= 0.1 for k in kls[20:]) >= 30
    assert float((x.detach() ** 2).sum()) < 80.0
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    es2 = evoopt.OpenAIES([torch.nn.Parameter(x.detach().clone())], popsize=20, lr=1e-4,
                          sigma=sigma, seed=0)
    opt2 = KLAdaptive(es2, target_kl=0.05, lr_min=1e-5, lr_max=1.0)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    assert opt2.lr == opt.lr and torch.equal(es2.mean, es.mean)


@pytest.mark.parametrize("change,match", [
    (dict(drop="lr_max"), r"lacks \['lr_max'\]"),
    (dict(factor=0.5), r"saved Invalid factor: 0.5 \(expected a finite number > 1\)"),
    (dict(lr_min=-1.0), r"saved Invalid lr_min: -1.0"),
    (dict(num_increases=-3), r"num_decreases/num_increases"),
])
def test_bad_checkpoint_is_refused_before_anything_is_loaded(change, match):
    """Regression: the inner optimizer was loaded first, then a missing key raised a bare
    KeyError (the lr had already changed), and invalid settings (factor 0.5: the rule
    inverted) were accepted silently."""
    opt = KLAdaptive([_quad_params()], lr=1e-3)
    sd = opt.state_dict()
    ours = dict(sd["kl_adaptive"])
    if "drop" in change:
        del ours[change["drop"]]
    else:
        ours.update(change)
    group = {**sd["optimizer"]["param_groups"][0], "lr": 5e-3}
    bad = {**sd, "kl_adaptive": ours, "optimizer": {**sd["optimizer"], "param_groups": [group]}}
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(bad)
    assert opt.lr == 1e-3 and opt.factor == 1.5 and opt.lr_min == 1e-5 and opt.num_increases == 0
