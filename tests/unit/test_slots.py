"""The controller's slots (operator/slots.py): a freed slot goes to a waiting change before
any waiting timer pass, in arrival order within each; a waiter cancelled just as it was handed
a slot passes it on. Everything runs in one loop, no time passes."""

from __future__ import annotations

import asyncio

import pytest

from penguinmails.operator.slots import Slots


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.mark.parametrize(
    ("arrivals", "granted"),
    [
        pytest.param("ttc", ["c", "t1", "t2"], id="a change goes before timers that came first"),
        pytest.param("tcc", ["c1", "c2", "t"], id="changes in arrival order, then the timer"),
        pytest.param("tt", ["t1", "t2"], id="timers alone: arrival order"),
    ],
)
def test_a_freed_slot_goes_to_a_change_first(arrivals: str, granted: list[str]) -> None:
    order: list[str] = []

    async def go() -> None:
        slots = Slots(1)
        await slots.acquire(change=False)  # held by another object's pass
        counts = {"t": 0, "c": 0}
        names = []
        for kind in arrivals:
            counts[kind] += 1
            names.append(f"{kind}{counts[kind]}")
        names = [n if arrivals.count(n[0]) > 1 else n[0] for n in names]

        async def one(name: str, change: bool) -> None:
            await slots.acquire(change=change)
            order.append(name)
            await settle()
            slots.release()

        tasks = []
        for kind, name in zip(arrivals, names, strict=True):
            tasks.append(asyncio.create_task(one(name, kind == "c")))
            await settle()
        assert order == []  # all waiting for the one slot
        slots.release()
        await asyncio.gather(*tasks)

    asyncio.run(go())
    assert order == granted


def test_a_waiter_cancelled_when_handed_a_slot_passes_it_on() -> None:
    async def go() -> bool:
        slots = Slots(1)
        await slots.acquire(change=True)
        first = asyncio.create_task(slots.acquire(change=True))
        second = asyncio.create_task(slots.acquire(change=False))
        await settle()
        slots.release()  # handed to `first`...
        first.cancel()  # ...which is cancelled before it runs
        await asyncio.gather(first, return_exceptions=True)
        await settle()
        return second.done() and not second.cancelled()

    assert asyncio.run(go())


def test_a_cancelled_waiter_leaves_the_queue() -> None:
    async def go() -> list[str]:
        slots = Slots(1)
        await slots.acquire(change=False)
        gone = asyncio.create_task(slots.acquire(change=True))
        await settle()
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        slots.release()  # nobody waits: free again
        got = []
        await slots.acquire(change=False)
        got.append("timer at once")
        return got

    assert asyncio.run(go()) == ["timer at once"]
