# SPDX-License-Identifier: Apache-2.0
"""cocotb tests for rtl/counter.v (cocotb 2.x API).

Inputs are driven and outputs are checked on the falling edge of the clock,
half a period away from the active (rising) edge, so the same tests behave
identically on event-driven (Icarus) and cycle-based (Verilator) simulators.
"""

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge


async def start_and_reset(dut, cycles=2):
    """Start a 100 MHz clock and hold the synchronous reset for `cycles` edges."""
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.en.value = 0
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


def width_of(dut):
    return len(dut.count)


@cocotb.test()
async def test_reset_clears_count(dut):
    """A synchronous reset forces count and wrap to zero, even while enabled."""
    await start_and_reset(dut)
    assert dut.count.value.to_unsigned() == 0
    assert dut.wrap.value == 0

    dut.en.value = 1
    for _ in range(5):
        await FallingEdge(dut.clk)
    assert dut.count.value.to_unsigned() == 5

    # Reset wins over enable; it only takes effect on a clock edge.
    dut.rst.value = 1
    assert dut.count.value.to_unsigned() == 5
    await FallingEdge(dut.clk)
    assert dut.count.value.to_unsigned() == 0
    assert dut.wrap.value == 0
    dut.rst.value = 0
    dut.en.value = 0


@cocotb.test()
async def test_counts_when_enabled(dut):
    """With en=1 the count advances by exactly one per rising edge."""
    await start_and_reset(dut)
    dut.en.value = 1
    for expected in range(1, 21):
        await FallingEdge(dut.clk)
        assert dut.count.value.to_unsigned() == expected, (
            f"after {expected} enabled edges count={dut.count.value}"
        )


@cocotb.test()
async def test_holds_when_disabled(dut):
    """With en=0 the count holds its value; toggling en counts only enabled edges."""
    await start_and_reset(dut)
    pattern = [1, 1, 0, 0, 0, 1, 0, 1, 1, 1, 0, 0]
    expected = 0
    for en in pattern:
        dut.en.value = en
        await FallingEdge(dut.clk)
        expected += en
        assert dut.count.value.to_unsigned() == expected
    # Long idle stretch: nothing moves.
    dut.en.value = 0
    for _ in range(10):
        await FallingEdge(dut.clk)
        assert dut.count.value.to_unsigned() == expected
        assert dut.wrap.value == 0


@cocotb.test()
async def test_wrap_pulse(dut):
    """Counting through 2**WIDTH values rolls over to 0 and pulses wrap once."""
    await start_and_reset(dut)
    width = width_of(dut)
    top = (1 << width) - 1
    dut.en.value = 1
    wrap_cycles = []
    for cycle in range(1, (1 << width) + 4):
        await FallingEdge(dut.clk)
        assert dut.count.value.to_unsigned() == cycle % (1 << width)
        if dut.wrap.value == 1:
            wrap_cycles.append(cycle)
    # count reaches `top` after `top` edges; the next edge rolls over to 0 and
    # raises wrap for exactly that one cycle.
    assert wrap_cycles == [top + 1], f"wrap seen at cycles {wrap_cycles}"

    # Park at all-ones with en=0: no wrap while disabled; the wrap pulse
    # belongs to the enabled edge that actually rolls the counter over.
    while dut.count.value.to_unsigned() != top:
        await FallingEdge(dut.clk)
    dut.en.value = 0
    for _ in range(3):
        await FallingEdge(dut.clk)
        assert dut.count.value.to_unsigned() == top
        assert dut.wrap.value == 0
    dut.en.value = 1
    await FallingEdge(dut.clk)
    assert dut.count.value.to_unsigned() == 0
    assert dut.wrap.value == 1
    dut.en.value = 0
    await FallingEdge(dut.clk)
    assert dut.wrap.value == 0
