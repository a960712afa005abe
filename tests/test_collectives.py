"""Collectives: ThreadGroup workers (2-4 threads) agree with numpy on every operation; LocalCollectives."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from algorithms.training.collectives import (
    LocalCollectives,
    ThreadGroup,
    array_from_bytes,
    array_to_bytes,
    state_from_bytes,
    state_to_bytes,
)

DEADLINE = 60.0


def run(world: int, work) -> list:
    """Run ``work(collectives)`` on ``world`` threads; return each rank's result (re-raising any failure)."""
    group = ThreadGroup(world, timeout=DEADLINE)
    results, errors = [None] * world, []

    def target(rank):
        try:
            results[rank] = work(group.member(rank))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE)
    assert not any(t.is_alive() for t in threads), "a worker is stuck"
    if errors:
        raise errors[0]
    return results


def rank_arrays(world: int, size: int, dtype) -> list[np.ndarray]:
    return [np.random.default_rng([rank, size]).normal(size=size).astype(dtype) for rank in range(world)]


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("size", [1, 7, 1000, 2**19])  # up to 4 MiB of float64 per rank
def test_allreduce_allgather_broadcast_equal_numpy(world, size):
    inputs = rank_arrays(world, size, np.float64)

    def work(c):
        x = inputs[c.rank]
        return (
            c.allreduce(x),
            c.allreduce(x, "max"),
            c.allreduce(x, "min"),
            c.allgather(x),
            c.broadcast(x if c.rank == 1 else None, root=1),
        )

    for rank, (total, hi, lo, gathered, bcast) in enumerate(run(world, work)):
        np.testing.assert_allclose(total, np.sum(inputs, axis=0), rtol=1e-12)
        np.testing.assert_array_equal(hi, np.max(inputs, axis=0))
        np.testing.assert_array_equal(lo, np.min(inputs, axis=0))
        assert len(gathered) == world
        for g, x in zip(gathered, inputs, strict=True):
            np.testing.assert_array_equal(g, x)
        np.testing.assert_array_equal(bcast, inputs[1])
        assert rank < world


def test_sum_is_the_same_on_every_rank_and_keeps_dtype():
    inputs = [np.arange(5, dtype=np.int32) * (r + 1) for r in range(3)]
    results = run(3, lambda c: c.allreduce(inputs[c.rank]))
    for r in results:
        assert r.dtype == np.int32
        np.testing.assert_array_equal(r, np.arange(5) * 6)


def test_multi_mib_arrays_and_shapes_survive():
    big = np.random.default_rng(0).normal(size=(1024, 1024)).astype(np.float32)  # 4 MiB
    results = run(2, lambda c: c.allgather(big * (c.rank + 1)))
    for gathered in results:
        np.testing.assert_array_equal(gathered[0], big)
        np.testing.assert_array_equal(gathered[1], big * 2)
        assert gathered[1].shape == (1024, 1024) and gathered[1].dtype == np.float32


@pytest.mark.parametrize("world", [2, 4])
def test_allgather_state_and_broadcast_state(world):
    def state(rank):
        return {
            "sum": np.full(3, rank, np.float64),
            "count": np.array(rank + 1),
            "centroids": np.eye(2) * rank,
            "file": np.array([rank]),
        }  # a key np.savez would refuse

    def work(c):
        return c.allgather_state(state(c.rank)), c.broadcast_state(state(c.rank) if c.rank == 0 else None)

    for states, root_state in run(world, work):
        assert len(states) == world
        for rank, s in enumerate(states):
            assert set(s) == {"sum", "count", "centroids", "file"}
            for k, v in state(rank).items():
                np.testing.assert_array_equal(s[k], v)
        np.testing.assert_array_equal(root_state["centroids"], np.zeros((2, 2)))


def test_many_rounds_in_a_row_do_not_mix_up():
    rounds = 50

    def work(c):
        return [c.allreduce(np.array([i * 10 + c.rank])) for i in range(rounds)]

    for out in run(3, work):
        np.testing.assert_array_equal(np.concatenate(out), [i * 30 + 3 for i in range(rounds)])


def test_barrier_and_json_broadcast():
    out = run(3, lambda c: (c.barrier(), c.broadcast_object_json({"seed": 7, "rank": c.rank}, root=2))[1])
    assert out == [{"seed": 7, "rank": 2}] * 3


def test_unknown_reduction_is_named():
    with pytest.raises(ValueError, match="unknown reduction 'mean'; use sum, max or min"):
        LocalCollectives().allreduce(np.ones(2), "mean")


def test_local_collectives_is_the_identity():
    c = LocalCollectives()
    x = np.arange(6.0).reshape(2, 3)
    assert c.rank == 0 and c.world_size == 1
    np.testing.assert_array_equal(c.allreduce(x), x)
    (g,) = c.allgather(x)
    np.testing.assert_array_equal(g, x)
    np.testing.assert_array_equal(c.broadcast(x), x)
    (s,) = c.allgather_state({"a": x})
    np.testing.assert_array_equal(s["a"], x)
    assert c.broadcast_object_json([1, "a"]) == [1, "a"]
    c.barrier()


def test_wire_format_never_pickles():
    with pytest.raises(ValueError):
        array_to_bytes(np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError):
        state_to_bytes({"x": np.array([None], dtype=object)})
    np.testing.assert_array_equal(array_from_bytes(array_to_bytes(np.arange(3))), np.arange(3))
    assert state_from_bytes(state_to_bytes({})) == {}


def test_a_worker_that_never_arrives_breaks_the_barrier_instead_of_hanging():
    import threading as th

    group = ThreadGroup(2, timeout=0.5)
    errors = []

    def lonely():
        try:
            group.member(0).allgather(np.ones(1))
        except th.BrokenBarrierError as exc:
            errors.append(exc)

    t = th.Thread(target=lonely)
    t.start()
    t.join(DEADLINE)
    assert not t.is_alive() and len(errors) == 1
