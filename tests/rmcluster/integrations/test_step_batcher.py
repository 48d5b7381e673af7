"""StepBatcher: concurrent per-sample calls become one batch call; results go back to their callers."""

import asyncio

import pytest

from rmcluster.integrations.step_batcher import StepBatcher


def test_concurrent_calls_make_one_batch_in_order():
    calls = []

    async def double(items):
        calls.append(list(items))
        return [2 * x for x in items]

    async def main():
        batcher = StepBatcher(double, window_s=0.05)

        async def staggered(i):  # arrivals spread out, as veRL's decode-in-executor makes them
            await asyncio.sleep(0.002 * i)
            return await batcher.submit(i)

        return await asyncio.gather(*(staggered(i) for i in range(10))), batcher.batch_sizes

    results, sizes = asyncio.run(main())
    assert results == [2 * i for i in range(10)]
    assert calls == [list(range(10))] and sizes == [10]


def test_quiet_gap_closes_a_batch_and_max_items_splits():
    async def ident(items):
        return list(items)

    async def main():
        batcher = StepBatcher(ident, window_s=0.02, max_items=3)
        first = await asyncio.gather(*(batcher.submit(i) for i in range(5)))  # 3 + 2
        await asyncio.sleep(0.05)
        second = await batcher.submit(99)  # a later step: its own batch
        return first, second, batcher.batch_sizes

    first, second, sizes = asyncio.run(main())
    assert first == [0, 1, 2, 3, 4] and second == 99 and sizes == [3, 2, 1]


def test_a_failed_batch_fails_each_caller():
    async def broken(items):
        raise RuntimeError("service down")

    async def main():
        batcher = StepBatcher(broken, window_s=0.01)
        return await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)

    errors = asyncio.run(main())
    assert [str(e) for e in errors] == ["service down"] * 3


def test_wrong_result_count_is_an_error():
    async def short(items):
        return items[:-1]

    async def main():
        batcher = StepBatcher(short, window_s=0.01)
        return await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)

    with pytest.raises(RuntimeError, match="2 items"):
        raise asyncio.run(main())[0]
