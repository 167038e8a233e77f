import numpy as np
import pytest

from biolab.data.packing import MixedStream, WindowStream


def docs(n, length=9, base=2):
    """n documents of ``length`` tokens; doc d is filled with token base + d."""
    ids = np.repeat(np.arange(n) + base, length)
    return ids, np.arange(n + 1) * length


def test_windows_cover_each_epoch_with_eos_between_documents():
    ids, offsets = docs(40)
    s = WindowStream(ids, offsets, eos=0, ctx=16, seed=0)
    epoch = s.epoch_tokens(0)
    assert len(epoch) == 40 * 10 and (epoch == 0).sum() == 40
    assert sorted(set(epoch.tolist()) - {0}) == list(range(2, 42))
    w = s.next_windows(25)  # 400 // 16 = 25 windows, the last tokens dropped
    assert w.shape == (25, 16) and np.array_equal(w.reshape(-1), epoch[:400])
    assert s.state_dict() == {"epoch": 0, "pos": 400}
    s.next_windows(1)
    assert s.state_dict() == {"epoch": 1, "pos": 16}
    assert not np.array_equal(s.epoch_tokens(1), epoch)  # reshuffled every epoch


def test_a_persons_entries_are_spread_across_windows():
    # 200 people x 5 entries stored adjacently, as a dataset writes them
    person_of_doc = np.repeat(np.arange(200), 5)
    ids = np.repeat(person_of_doc + 2, 9)
    s = WindowStream(ids, np.arange(1001) * 9, eos=0, ctx=64, seed=1)
    windows = s.next_windows(150)
    together = [len(set(w[w > 1].tolist())) for w in windows]
    # sequential packing would put ~6 docs of ~1-2 people per window; shuffled gives ~6 people
    assert np.mean(together) > 5
    shared = sum((w == p + 2).sum() >= 18 for w in windows for p in range(200))
    assert shared < 0.05 * len(windows)  # two entries of one person in one window is rare


def test_same_seed_same_windows_and_resume():
    ids, offsets = docs(30)
    a = WindowStream(ids, offsets, 0, 12, seed=5)
    first = a.next_windows(7)
    state = a.state_dict()
    rest = a.next_windows(40)
    b = WindowStream(ids, offsets, 0, 12, seed=5)
    assert np.array_equal(b.next_windows(7), first)
    c = WindowStream(ids, offsets, 0, 12, seed=5)
    c.load_state_dict(state)
    assert np.array_equal(c.next_windows(40), rest)
    assert not np.array_equal(WindowStream(ids, offsets, 0, 12, seed=6).next_windows(7), first)


def test_mixed_windows_are_all_bio_or_all_qa_at_the_ratio():
    bio_ids, bio_off = docs(50, base=2)
    qa_ids, qa_off = docs(50, base=100)
    mixed = MixedStream(
        WindowStream(bio_ids, bio_off, 0, 8, 0), WindowStream(qa_ids, qa_off, 0, 8, 0, stream=12), 0.8, 0
    )
    w = mixed.next_windows(2000)
    is_qa = (w >= 100).any(1)
    assert not ((w >= 100).any(1) & ((w > 0) & (w < 100)).any(1)).any()  # never mixed in a window
    assert abs(is_qa.mean() - 0.8) < 0.03
    state = mixed.state_dict()
    again = MixedStream(
        WindowStream(bio_ids, bio_off, 0, 8, 0), WindowStream(qa_ids, qa_off, 0, 8, 0, stream=12), 0.8, 0
    )
    again.load_state_dict(state)
    assert np.array_equal(again.next_windows(30), mixed.next_windows(30))


def test_qa_subset_and_errors():
    ids, offsets = docs(10)
    s = WindowStream(ids, offsets, 0, 5, 0, docs=np.array([1, 3]))
    assert set(s.next_windows(4).reshape(-1).tolist()) <= {0, 3, 5}
    with pytest.raises(ValueError, match="fewer than one window"):
        WindowStream(ids, offsets, 0, 1000, 0)
    with pytest.raises(ValueError, match="needs a QA stream"):
        MixedStream(s, None, 0.5, 0)
