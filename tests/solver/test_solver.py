"""slimdet/solver: LARS, the per-iteration LR schedules of docs/schedules.md, the base-LR swap,
the epoch clock (SOLVER.MAX_ITER) and MoCo v3's momentum schedule."""
import math
from types import SimpleNamespace

import pytest
import torch
from detectron2.utils.events import EventStorage
from torch import nn

from slimdet.config import ConfigError, get_cfg
from slimdet.engine.hooks import WidthScheduleHook
from slimdet.modeling.methods.momentum import MomentumScheduleHook
from slimdet.modeling.slim import WidthLoop
from slimdet.solver import (LARS, EpochClock, build_lr_schedule, build_lr_scheduler,
                            build_optimizer, param_groups)


# ------------------------------------------------------------------------------------- LARS
def _conv_bn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, bias=True), nn.BatchNorm2d(3))
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    return model


def test_param_groups_put_bn_and_biases_apart_for_lars():
    cfg = get_cfg()
    cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.WEIGHT_DECAY_NORM, cfg.SOLVER.WEIGHT_DECAY_BIAS = 1e-2, 0, 0
    model = _conv_bn()
    groups = param_groups(cfg, model)
    conv, bn = model
    by_id = {id(p): g for g in groups for p in g["params"]}
    weights = by_id[id(conv.weight)]
    assert not weights["lars_exclude"] and weights["weight_decay"] == 1e-2
    for p in (conv.bias, bn.weight, bn.bias):
        assert by_id[id(p)]["lars_exclude"] and by_id[id(p)]["weight_decay"] == 0


def test_lars_trust_ratio_and_exclusions_step_by_step():
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER, cfg.SOLVER.BASE_LR, cfg.SOLVER.MOMENTUM = "LARS", 0.5, 0.9
    cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.LARS_TRUST_COEF = 1e-2, 1e-3
    # Weight decay on the excluded groups too: LARS must ignore it there.
    cfg.SOLVER.WEIGHT_DECAY_NORM = cfg.SOLVER.WEIGHT_DECAY_BIAS = 1e-2
    model = _conv_bn()
    opt = build_optimizer(cfg, model)
    assert isinstance(opt, LARS)
    conv, bn = model
    w0, g = conv.weight.detach().clone(), conv.weight.grad.clone()
    others = {p: (p.detach().clone(), p.grad.clone()) for p in (conv.bias, bn.weight, bn.bias)}
    opt.step()
    d = g + 1e-2 * w0
    step1 = 1e-3 * w0.norm() / d.norm() * d
    torch.testing.assert_close(conv.weight.detach(), w0 - 0.5 * step1)
    for p, (p0, pg) in others.items():  # neither weight decay nor trust ratio: plain SGD
        torch.testing.assert_close(p.detach(), p0 - 0.5 * pg)
    # Second step: momentum accumulates the trust-scaled update.
    w1 = conv.weight.detach().clone()
    opt.step()
    d = g + 1e-2 * w1
    step2 = 0.9 * step1 + 1e-3 * w1.norm() / d.norm() * d
    torch.testing.assert_close(conv.weight.detach(), w1 - 0.5 * step2)


def test_lars_trust_ratio_is_one_for_a_zero_weight():
    p = nn.Parameter(torch.zeros(3, 3))
    p.grad = torch.ones(3, 3)
    LARS([dict(params=[p], weight_decay=0.0, lars_exclude=False)], lr=0.1).step()
    torch.testing.assert_close(p.detach(), torch.full((3, 3), -0.1))


# ------------------------------------------------------------------------------------- clock
def test_clock_is_exact_without_max_iter_and_scales_with_it():
    cfg = get_cfg()
    cfg.SOLVER.EPOCHS = 300
    full = EpochClock.from_config(cfg, 1251)
    assert full.max_iter == 375300 and full.scale == 1.0
    assert full.iteration(150) == 187650 and full.iteration(9.9) == pytest.approx(12384.9)
    cfg.SOLVER.MAX_ITER = 600
    short = EpochClock.from_config(cfg, 1251)
    assert short.max_iter == 600 and short.iteration(150) == pytest.approx(300)
    assert short.iteration(300) == pytest.approx(600) and short.fraction(300) == pytest.approx(0.5)


@pytest.mark.parametrize("key,value", [("SOLVER.EPOCHS", 0), ("SOLVER.MAX_ITER", -1)])
def test_clock_rejects_meaningless_lengths(key, value):
    cfg = get_cfg()
    cfg.merge_from_list([key, value])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        EpochClock.from_config(cfg, 10)


def test_clock_rejects_a_run_without_iterations():
    with pytest.raises(ConfigError, match=r"SOLVER\.EPOCHS 200 x 0 iterations per epoch"):
        EpochClock.from_config(get_cfg(), 0)


# ------------------------------------------------------------------------------------- schedules
def _schedule(epochs=10, ipe=100, max_iter=0, **solver):
    cfg = get_cfg()
    cfg.SOLVER.EPOCHS, cfg.SOLVER.MAX_ITER, cfg.SOLVER.BASE_LR = epochs, max_iter, 1.0
    for k, v in solver.items():
        if k == "SLOW_START_EPOCH":
            cfg.MODEL.SLIM.SLOW_START_EPOCH = v
        else:
            cfg.SOLVER[k] = v
    clock = EpochClock.from_config(cfg, ipe)
    return cfg, clock, build_lr_schedule(cfg, clock)


def test_warmup_then_cosine_over_the_iterations_after_warmup():
    _, clock, s = _schedule(WARMUP_EPOCHS=1.0)
    N, W = 1000, 100
    assert s.at(0) == 0.0 and s.at(50) == pytest.approx(0.5) and s.at(W) == pytest.approx(1.0)
    for i in (101, 300, 550, 999):
        assert s.at(i) == pytest.approx(0.5 * (1 + math.cos(math.pi * (i - W) / (N - W))))
    assert s.at(550) == pytest.approx(0.5)  # the cosine's middle is the middle of N - W
    # Fractional warm-up (MoCo v3's 0.033 of the run): i <= W is warm-up, the next is cosine.
    _, _, s = _schedule(WARMUP_EPOCHS=0.995)
    assert s.at(99) == pytest.approx(99 / 99.5)
    assert s.at(100) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5 / 900.5)))


def test_no_warmup_is_a_cosine_over_the_whole_run():
    _, _, s = _schedule()
    assert s.at(0) == 1.0 and s.at(500) == pytest.approx(0.5) and s.at(999) < 1e-4


def test_lr_multiplier_sets_the_schedule_on_every_param_group():
    cfg, clock, s = _schedule(WARMUP_EPOCHS=1.0)
    params = [nn.Parameter(torch.zeros(1)) for _ in range(2)]
    opt = torch.optim.SGD([dict(params=params[:1]), dict(params=params[1:])], lr=0.3)
    sched = build_lr_scheduler(cfg, opt, clock)
    for i in range(250):
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.3 * s.at(i)] * 2), i
        opt.step()
        sched.step()


def test_multistep_with_warmup_steps_exactly_at_the_step_iterations():
    _, _, s = _schedule(LR_SCHEDULER_NAME="WarmupMultiStep", STEPS=[6, 8], GAMMA=0.1,
                        WARMUP_EPOCHS=0.5)
    assert s.at(0) == 0 and s.at(25) == pytest.approx(0.5) and s.at(50) == pytest.approx(1.0)
    assert s.at(599) == 1.0 and s.at(600) == pytest.approx(0.1)
    assert s.at(799) == pytest.approx(0.1) and s.at(800) == pytest.approx(0.01)
    assert s.at(999) == pytest.approx(0.01)


def test_base_lr_swap_replaces_the_base_and_keeps_the_cosine_running():
    _, _, plain = _schedule(WARMUP_EPOCHS=1.0, SLOW_START_EPOCH=5)
    _, _, swap = _schedule(WARMUP_EPOCHS=1.0, SLOW_START_EPOCH=5, BASE_LR_AFTER_SLOW_START=3.0)
    for i in (0, 100, 499):
        assert swap.at(i) == plain.at(i)
    for i in (500, 501, 800, 999):
        assert swap.at(i) == pytest.approx(3.0 * plain.at(i))
    # Without a slow start there is nothing to swap at.
    _, _, none = _schedule(WARMUP_EPOCHS=1.0, BASE_LR_AFTER_SLOW_START=3.0)
    assert none.at(800) == plain.at(800)


@pytest.mark.parametrize("solver,key", [
    (dict(WARMUP_EPOCHS=10.0), "SOLVER.WARMUP_EPOCHS"),
    (dict(LR_SCHEDULER_NAME="WarmupMultiStep", STEPS=[6, 12]), "SOLVER.STEPS"),
    (dict(LR_SCHEDULER_NAME="Cosine"), "SOLVER.LR_SCHEDULER_NAME"),
])
def test_schedule_keys_that_cannot_work_are_config_errors(solver, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _schedule(**solver)


# ------------------------------------------------------------------------------ under MAX_ITER
def test_max_iter_shortens_every_epoch_key_of_the_schedule():
    """A 10-epoch recipe of 100 iterations per epoch run for 50 iterations: warm-up, steps and
    the swap fall at the same fractions of the run."""
    _, clock, short = _schedule(max_iter=50, WARMUP_EPOCHS=2.0, SLOW_START_EPOCH=5,
                                BASE_LR_AFTER_SLOW_START=2.0)
    _, _, full = _schedule(WARMUP_EPOCHS=2.0, SLOW_START_EPOCH=5, BASE_LR_AFTER_SLOW_START=2.0)
    assert clock.scale == 0.05
    # The LR rises over the shortened warm-up (10 iterations), as over the recipe's 200.
    rising = [short.at(i) for i in range(11)]
    assert rising == sorted(rising) and rising[0] == 0 and rising[10] == pytest.approx(1.0)
    for i in range(50):
        assert short.at(i) == pytest.approx(full.at(20 * i)), i
    assert short.at(24) < 1.0 < short.at(25)  # the swap at half of the run

    # The probe's milestones (epochs 60 and 80 of 100) under MAX_ITER: no fvcore error, same
    # fractions.
    _, _, probe = _schedule(epochs=100, ipe=1251, max_iter=10, LR_SCHEDULER_NAME="WarmupMultiStep",
                            STEPS=[60, 80])
    assert [probe.at(i) for i in range(10)] == pytest.approx([1.0] * 6 + [0.1] * 2 + [0.01] * 2)


class _Trainer(SimpleNamespace):
    pass


def _hook_at(hook, iteration, storage, max_iter=100):
    hook.trainer = _Trainer(iter=iteration, storage=storage, max_iter=max_iter)
    hook.before_step()


def test_mocov3_momentum_follows_a_half_cosine_to_one_also_under_max_iter():
    cfg = get_cfg()
    cfg.SOLVER.EPOCHS = 300
    for max_iter in (0, 30):
        cfg.SOLVER.MAX_ITER = max_iter
        clock = EpochClock.from_config(cfg, 10)
        method = SimpleNamespace(momentum=None)
        hook = MomentumScheduleHook(method, 0.99, clock)
        with EventStorage() as storage:
            seen = []
            for i in range(0, clock.max_iter, max(1, clock.max_iter // 10)):
                _hook_at(hook, i, storage)
                f = i / clock.max_iter
                expected = 1 - 0.01 * 0.5 * (1 + math.cos(math.pi * f))
                assert method.momentum == pytest.approx(expected)
                seen.append(method.momentum)
        assert seen[0] == pytest.approx(0.99) and seen == sorted(seen)
        _hook_at(hook, clock.max_iter // 2, storage)
        assert method.momentum == pytest.approx(0.995)


def test_slow_start_scales_with_max_iter():
    """SLOW_START_EPOCH 400 of 800 with MAX_ITER 8: the sub-widths train from iteration 4."""
    cfg = get_cfg()
    cfg.SOLVER.EPOCHS, cfg.SOLVER.MAX_ITER = 800, 8
    clock = EpochClock.from_config(cfg, 1251)
    loop = WidthLoop([1.0, 0.5, 0.25])
    hook = WidthScheduleHook(loop, 400, clock)
    with EventStorage() as storage:
        active = []
        for i in range(8):
            _hook_at(hook, i, storage, max_iter=8)
            active.append(len(loop.widths))
    assert active == [1] * 4 + [3] * 4
    assert hook.trained_widths(3) == [1.0] and hook.trained_widths(4) == [1.0, 0.5, 0.25]
