"""slimdet/data/samplers.py: which samples each step and rank sees, from (seed, iteration) only."""
import itertools

import pytest
import torch

from slimdet.data.samplers import IterationIndices, IterationSampler


def test_each_epoch_is_a_permutation_and_ranks_split_every_global_batch():
    size, batch, world = 103, 12, 3
    ranks = [IterationIndices(size, batch, seed=5, rank=r, world_size=world) for r in range(world)]
    ipe = ranks[0].iters_per_epoch
    assert ipe == size // batch
    for epoch in range(3):
        seen = []
        for step in range(ipe):
            it = epoch * ipe + step
            shares = [r.batch(it) for r in ranks]
            assert all(len(s) == batch // world for s in shares)
            seen += torch.cat(shares).tolist()
        assert len(set(seen)) == len(seen) == ipe * batch  # no sample twice in an epoch
        assert set(seen) <= set(range(size))


def test_order_depends_on_seed_and_epoch_only():
    a, b = IterationIndices(50, 10, seed=1), IterationIndices(50, 10, seed=1)
    assert all(torch.equal(a.batch(i), b.batch(i)) for i in [7, 0, 3, 12, 3])  # any order
    other = IterationIndices(50, 10, seed=2)
    assert not all(torch.equal(a.batch(i), other.batch(i)) for i in range(5))
    epochs = [sorted(a.batch(e * 5).tolist()) for e in range(2)], [a.batch(e * 5) for e in range(2)]
    assert not torch.equal(epochs[1][0], epochs[1][1])  # a new permutation each epoch


def test_sampler_resumed_at_an_iteration_yields_what_the_uninterrupted_run_did():
    indices = IterationIndices(40, 8, seed=3)
    full = list(itertools.islice(IterationSampler(indices), 8 * 9))
    resumed = list(itertools.islice(IterationSampler(indices, start_iter=4), 8 * 5))
    assert resumed == full[8 * 4:]
    assert [it for _, it in full[:16]] == [0] * 8 + [1] * 8  # each index tagged with its step


@pytest.mark.parametrize("size, batch, world, match", [
    (100, 10, 3, "not divisible by the 3 processes"),
    (7, 8, 1, "fewer than one batch of 8"),
])
def test_impossible_batches_are_refused(size, batch, world, match):
    with pytest.raises(ValueError, match=match):
        IterationIndices(size, batch, world_size=world)


def test_iterations_before_0_are_whole_epochs_of_their_own():
    # The MoCo queue prefill reads the iterations before the first step; epoch -1 was once
    # the cache's empty "no epoch yet" entry.
    indices = IterationIndices(40, 8, seed=3)
    before = [indices.batch(it) for it in range(-5, 0)]
    assert all(b.dtype == torch.long and len(b) == 8 for b in before)
    assert sorted(torch.cat(before).tolist()) == list(range(40))  # epoch -1: a permutation
    assert not torch.equal(torch.cat(before), torch.cat([indices.batch(it) for it in range(5)]))
