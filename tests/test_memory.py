"""reuse_large_buffers: glibc thresholds raised for a run, restored when the last run ends."""

import sftviz._memory as M


class _FakeLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("trim", pad))
        return 1


def test_raised_during_and_restored_after_nested_blocks(monkeypatch):
    fake = _FakeLibc()
    monkeypatch.setattr(M, "_libc", lambda: fake)
    monkeypatch.delenv("SFTVIZ_NO_MALLOPT", raising=False)
    with M.reuse_large_buffers():
        assert fake.calls == [("mallopt", p, v) for p, v in M.DURING.items()]
        with M.reuse_large_buffers():  # a second run at the same time changes nothing more
            pass
        assert len(fake.calls) == len(M.DURING)
    assert fake.calls[len(M.DURING) :] == [("mallopt", p, v) for p, v in M.AFTER.items()] + [("trim", 0)]
    assert M._depth == 0


def test_restored_when_the_run_raises(monkeypatch):
    fake = _FakeLibc()
    monkeypatch.setattr(M, "_libc", lambda: fake)
    monkeypatch.delenv("SFTVIZ_NO_MALLOPT", raising=False)
    try:
        with M.reuse_large_buffers():
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert fake.calls[-1] == ("trim", 0) and M._depth == 0


def test_off_when_inactive_or_opted_out(monkeypatch):
    fake = _FakeLibc()
    monkeypatch.setattr(M, "_libc", lambda: fake)
    with M.reuse_large_buffers(active=False):  # e.g. training on a GPU
        pass
    monkeypatch.setenv("SFTVIZ_NO_MALLOPT", "1")
    with M.reuse_large_buffers():
        pass
    assert fake.calls == []
