"""A call whose deadline passed while it queued is refused before any store work starts."""

import grpc
import pytest

from service.transport.errors import translate_errors


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self, remaining):
        self._remaining = remaining
        self.status = None

    def time_remaining(self):
        return self._remaining

    def abort_with_status(self, status):
        self.status = status
        raise Aborted()


class Servicer:
    def __init__(self):
        self.calls = 0

    @translate_errors
    def Check(self, request, context):
        self.calls += 1
        return "answer"


@pytest.mark.parametrize("remaining", [0, 0.0])
def test_a_passed_deadline_is_refused_without_running_the_handler(remaining):
    servicer, context = Servicer(), FakeContext(remaining)
    with pytest.raises(Aborted):
        servicer.Check(None, context)
    assert servicer.calls == 0
    assert context.status.code is grpc.StatusCode.DEADLINE_EXCEEDED


@pytest.mark.parametrize("remaining", [None, 0.5, 1e9])
def test_a_live_or_absent_deadline_runs_the_handler(remaining):
    servicer = Servicer()
    assert servicer.Check(None, FakeContext(remaining)) == "answer"
    assert servicer.calls == 1
