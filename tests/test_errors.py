"""The error tree: two branches that match the exit codes, fields that survive pickling."""

from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime

import pytest

from engine import errors
from engine.errors import BadInput, BadRequest, RivuletError, TransformError, WorkFailed
from engine.plan.job import load_job
from engine.work.conform import rows_to_table
from tests.conftest import make_events

DAY = (datetime(2024, 10, 26), datetime(2024, 10, 27))

LEAVES = [
    cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, RivuletError)
    and cls not in (RivuletError, BadInput, WorkFailed)
]  # fmt: skip


def test_every_error_is_bad_input_a_failure_of_work_or_a_bad_request() -> None:
    assert len(LEAVES) == 17
    for cls in LEAVES:
        branches = [issubclass(cls, branch) for branch in (BadInput, WorkFailed, BadRequest)]
        assert branches.count(True) == 1, cls
        if not issubclass(cls, BadRequest):
            assert cls.exit_code == (2 if issubclass(cls, BadInput) else 1)
        assert cls.__doc__ and cls.kind != RivuletError.kind


def test_a_bad_request_pickles_with_its_status() -> None:
    copy = pickle.loads(pickle.dumps(BadRequest("No service 's'.", 404, view="s")))
    assert (copy.status, copy.view, str(copy)) == (404, "s", "No service 's'.")


@pytest.mark.parametrize("cls", LEAVES, ids=lambda cls: cls.__name__)
def test_an_error_pickles_with_its_fields(cls: type[RivuletError]) -> None:
    error = cls("Feature view 'v': it broke.", view="v", feature="f", interval="i", provider="p")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls and str(copy) == "Feature view 'v': it broke."
    assert (copy.view, copy.feature, copy.interval, copy.provider) == ("v", "f", "i", "p")


def _raise_in_a_worker() -> None:
    raise TransformError("Feature view 'scores' raised.", view="scores", interval="2024-10-26")


def test_an_error_crosses_a_spawned_process_with_its_fields() -> None:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        future = pool.submit(_raise_in_a_worker)
        with pytest.raises(TransformError) as caught:
            future.result()
    assert (caught.value.view, caught.value.interval) == ("scores", "2024-10-26")
    assert caught.value.feature is None


def test_an_output_error_names_its_view_and_feature(write_job) -> None:
    job = write_job(
        """
@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("n", Int64)])
def view(row):
    return {"n": "twelve"}
"""
    )
    view = load_job(job).feature_views["view"]
    batch = make_events().to_batches()[0].slice(0, 1)
    with pytest.raises(errors.OutputError) as caught:
        rows_to_table(
            view, batch, [{"n": "twelve"}], datetime(2024, 10, 26), datetime(2024, 10, 27)
        )
    assert (caught.value.view, caught.value.feature) == ("view", "n")
