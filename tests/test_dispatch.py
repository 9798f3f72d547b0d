"""The dispatch policy for fast python-mode rows, fed measurements instead of real timing."""

from __future__ import annotations

from engine.runtime.dispatch import (
    CPU_CHUNKS_IN_FLIGHT,
    EVIDENCE_ROWS,
    MOST_ROWS_PER_CHUNK,
    Dispatch,
)


def feed(dispatch: Dispatch, rows: int, wall: float, cpu: float, times: int = 10) -> None:
    for _ in range(times):
        dispatch.observe([wall / rows] * rows, cpu)


def test_rows_that_wait_run_alone_with_the_full_concurrency() -> None:
    dispatch = Dispatch(concurrency=64)
    assert (dispatch.chunk_size, dispatch.in_flight) == (1, 1)  # nothing measured yet
    feed(dispatch, rows=1, wall=0.005, cpu=0.00002, times=EVIDENCE_ROWS)  # API calls: 5 ms,
    assert not dispatch.cpu_bound  # 20 µs of CPU each
    assert (dispatch.chunk_size, dispatch.in_flight) == (1, 64)


def test_python_work_runs_in_big_chunks_on_a_few_threads() -> None:
    dispatch = Dispatch(concurrency=64)
    feed(dispatch, rows=512, wall=0.001, cpu=0.00095)  # 2 µs a row, all of it on the CPU
    assert dispatch.cpu_bound
    assert dispatch.chunk_size == MOST_ROWS_PER_CHUNK
    assert dispatch.in_flight == CPU_CHUNKS_IN_FLIGHT


def test_waiting_for_the_gil_does_not_make_python_work_look_like_waiting() -> None:
    # Under load the same rows take 5x their CPU in wall time (waiting for the GIL, or for
    # other processes): the old rule, by wall time, would have called them I/O and started
    # 64 threads. The share stays above LEAVE_CPU, so they stay CPU work.
    dispatch = Dispatch(concurrency=64)
    feed(dispatch, rows=512, wall=0.001, cpu=0.00095)
    feed(dispatch, rows=512, wall=0.010, cpu=0.002)
    assert dispatch.cpu_bound and dispatch.in_flight == CPU_CHUNKS_IN_FLIGHT
    assert dispatch.chunk_size == int(0.002 / (0.002 / 512))  # sized by CPU, not wall time


def test_rows_first_seen_on_a_loaded_machine_stay_on_a_few_threads() -> None:
    # Two busy processes on two cores: a row of Python work spends 15% of its wall time on
    # the CPU, the rest waiting for a core. That is between the thresholds, where rows
    # stay what they were; they start as CPU work, so they stay on a few threads.
    dispatch = Dispatch(concurrency=16)
    feed(dispatch, rows=512, wall=0.010, cpu=0.0015)
    assert dispatch.cpu_bound and dispatch.in_flight == CPU_CHUNKS_IN_FLIGHT


def test_rows_that_start_waiting_get_their_threads_back() -> None:
    dispatch = Dispatch(concurrency=16)
    feed(dispatch, rows=512, wall=0.001, cpu=0.00095)
    feed(dispatch, rows=1, wall=0.005, cpu=0.00002, times=30)
    assert not dispatch.cpu_bound and dispatch.in_flight == 16


def test_hysteresis_holds_between_the_thresholds() -> None:
    waiting, working = Dispatch(concurrency=16), Dispatch(concurrency=16)
    feed(waiting, rows=1, wall=0.005, cpu=0.00002, times=EVIDENCE_ROWS)
    feed(working, rows=512, wall=0.001, cpu=0.00095)
    for dispatch in (waiting, working):  # then rows 15% on the CPU, between the thresholds
        feed(dispatch, rows=100, wall=0.001, cpu=0.00015, times=40)
    assert not waiting.cpu_bound and working.cpu_bound


def test_tasks_in_flight_ramp_up_from_one() -> None:
    dispatch = Dispatch(concurrency=16)
    seen = []
    for _ in range(EVIDENCE_ROWS + 2):
        seen.append(dispatch.in_flight)
        dispatch.observe([0.005], 0.00002)
    # up to CPU work's threads until enough rows showed they wait, then the view's 16
    assert seen == [1, 2, *[CPU_CHUNKS_IN_FLIGHT] * (EVIDENCE_ROWS - 2), 16, 16]


def test_one_descheduled_row_does_not_open_the_threads() -> None:
    # On a busy machine the first row of Python work lost a time slice: 3 ms of wall time
    # for 10 µs on the CPU, an API call's share. One row is not evidence; the next ones are.
    dispatch = Dispatch(concurrency=16)
    dispatch.observe([0.003], 0.00001)
    assert dispatch.cpu_bound and dispatch.in_flight <= CPU_CHUNKS_IN_FLIGHT
    assert dispatch.chunk_size == 1  # sized by wall time until the rows are known
    feed(dispatch, rows=64, wall=0.004, cpu=0.0012)
    assert dispatch.cpu_bound and dispatch.in_flight == CPU_CHUNKS_IN_FLIGHT


def test_one_descheduled_row_in_a_task_does_not_make_python_work_look_like_waiting() -> None:
    # 47 rows of 2 µs, one of which lost 50 ms to other processes: the task's summed wall
    # time gives a share of 0.2%, an API call's; its typical row's gives the truth.
    dispatch = Dispatch(concurrency=16)
    dispatch.observe([2e-6] * 46 + [0.05], cpu=47 * 2e-6)
    assert dispatch.cpu_bound and dispatch.in_flight <= CPU_CHUNKS_IN_FLIGHT
    feed(dispatch, rows=512, wall=0.001, cpu=0.00095)
    assert dispatch.cpu_bound and dispatch.in_flight == CPU_CHUNKS_IN_FLIGHT
