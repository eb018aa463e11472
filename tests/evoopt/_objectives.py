"""Benchmark functions shared by the optimizer tests: on tensors [..., D] and, with the
``_pop`` suffix, as population objectives (``pop -> [P]``)."""

import math

import evoopt


def sphere(x):
    return (x**2).sum(-1)


def rosenbrock(x):
    return (100 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1 - x[..., :-1]) ** 2).sum(-1)


def rastrigin(x):
    return 10 * x.shape[-1] + (x**2 - 10 * (2 * math.pi * x).cos()).sum(-1)


def sphere_pop(pop):
    return sphere(pop.flat)


def rosenbrock_pop(pop):
    return rosenbrock(pop.flat)


def f_mean(opt, f):
    """A population objective ``f`` at the optimizer's center."""
    return float(f(evoopt.Population(opt.mean[None], opt.layout))[0])
