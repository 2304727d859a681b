"""The floor search shared by the neural codec's PSNR floor and every codec's perceptual floors."""

import math

import pytest

from latentarc.codec.bracket import Probe, cheapest_passing


def knob(margin, size):
    """A codec knob whose floor margin and stream size are the given monotone functions of the setting."""
    seen = []

    def evaluate(x):
        seen.append(x)
        return Probe(x, margin(x), size(x), x)

    return evaluate, seen


@pytest.mark.parametrize("root", [3.0, 37.5, 61.2, 97.0])
@pytest.mark.parametrize("curve", ["linear", "convex", "concave"])
def test_quality_search_finds_the_boundary_in_fewer_probes_than_bisection(root, curve):
    shape = {"linear": lambda x: x - root, "convex": lambda x: math.expm1((x - root) / 20),
             "concave": lambda x: math.log1p(max(x - root + 30, 0) / 30) - math.log(2) if x > root - 30 else -1.0}
    evaluate, seen = knob(shape[curve], lambda x: int(1000 + 50 * x))
    s = cheapest_passing(evaluate, passing=100.0, failing=0.0, start=(50.0,), max_probes=8, min_width=100 / 2**7)
    assert s.best is not None and s.best.passed and s.best.x >= root
    assert len(seen) <= 8 and seen[0] == 50.0
    assert s.best.x - root < 100 / 2**7 + 1.0  # as close as seven bisections, or better
    assert all(p.size >= s.best.size for p in s.probes if p.passed)


def test_search_runs_either_way_round():
    """The neural PSNR floor: the passing end is the finest (smallest) log step, both ends probed first."""
    evaluate, seen = knob(lambda x: 1.3 - x, lambda x: int(10_000 * math.exp(-x)))
    s = cheapest_passing(evaluate, passing=-2.0, failing=4.0, start=(-2.0, 4.0), max_probes=10, min_width=0.02)
    assert seen[:2] == [-2.0, 4.0]
    assert s.best is not None and 1.3 - 0.02 <= s.best.x <= 1.3
    assert len(seen) < 10


def test_unreachable_floor_ends_at_the_passing_end():
    evaluate, seen = knob(lambda x: -1.0, lambda x: 100)
    s = cheapest_passing(evaluate, passing=100.0, failing=0.0, start=(50.0,), max_probes=8, min_width=1)
    assert s.best is None and seen == [50.0, 100.0] and s.probes[-1].x == 100.0
    evaluate, seen = knob(lambda x: -1.0, lambda x: 100)
    s = cheapest_passing(evaluate, passing=-2.0, failing=4.0, start=(-2.0, 4.0), max_probes=10, min_width=0.02)
    assert s.best is None and seen == [-2.0]


def test_a_passing_cheapest_end_stops_at_once():
    evaluate, seen = knob(lambda x: 5.0, lambda x: int(100 - x))
    s = cheapest_passing(evaluate, passing=-2.0, failing=4.0, start=(-2.0, 4.0), max_probes=10, min_width=0.02)
    assert seen == [-2.0, 4.0] and s.best.x == 4.0


def test_size_gap_stops_when_no_stream_between_could_save_more():
    # sizes plateau at 1000 bytes above x = 40 and the floor needs x ≥ 60: the first pass beside a fail of equal
    # size is as small as any passing stream can be
    evaluate, seen = knob(lambda x: x - 60, lambda x: 1000 if x >= 40 else int(25 * x))
    s = cheapest_passing(evaluate, passing=100.0, failing=0.0, start=(50.0,), max_probes=8, min_width=100 / 2**7,
                         size_gap=0.01)
    assert seen == [50.0, 100.0] and s.best.x == 100.0
    with_no_gap = cheapest_passing(knob(lambda x: x - 60, lambda x: 1000 if x >= 40 else int(25 * x))[0],
                                   passing=100.0, failing=0.0, start=(50.0,), max_probes=8, min_width=100 / 2**7)
    assert len(with_no_gap.probes) > 2


def test_max_probes_must_allow_one():
    with pytest.raises(ValueError):
        cheapest_passing(lambda x: Probe(x, 1.0, 1, None), passing=1.0, failing=0.0, max_probes=0, min_width=0.1)
