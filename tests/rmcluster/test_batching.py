import random

from hypothesis import given
from hypothesis import strategies as st

from rmcluster.batching import plan_batches


@given(
    lengths=st.lists(st.integers(1, 3000), max_size=200),
    budget=st.integers(1, 20000),
    size=st.integers(1, 70),
)
def test_plan_covers_every_item_once_within_limits(lengths, budget, size):
    batches = plan_batches(lengths, budget, size)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert 1 <= len(b) <= size
        width = max(lengths[i] for i in b)
        assert len(b) == 1 or len(b) * width <= budget


def test_plan_is_length_sorted_longest_first():
    lengths = [random.Random(0).randint(1, 500) for _ in range(100)]
    flat = [lengths[i] for b in plan_batches(lengths, 2048, 16) for i in b]
    assert flat == sorted(lengths, reverse=True)
