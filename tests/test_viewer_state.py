"""The viewer's key map and state machine, without a display (runtime/viewer/state.py)."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.viewer.state import (
    KEYS,
    OVERLAYS,
    THRESHOLD_MAX,
    THRESHOLD_MIN,
    Action,
    Effect,
    ViewerState,
    action_for_key,
    help_text,
    shown,
    step,
    wanted,
)

# Key codes as cv2.waitKeyEx returns them on Linux (Qt and GTK: X11 keysyms).
NAMED = {"Space": 32, "Backspace": 8, "Esc": 27, "Left": 0xFF51, "Up": 0xFF52, "Right": 0xFF53, "Down": 0xFF54}


def code(label: str) -> int:
    return NAMED.get(label, ord(label) if len(label) == 1 else -999)


def test_every_key_in_the_help_triggers_its_action():
    seen = set()
    for labels, action in KEYS:
        for label in labels.split(", "):
            assert action_for_key(code(label)) is action, (label, action)
        seen.add(action)
    assert seen == set(Action), "every action has a key"
    text = help_text()
    for labels, action in KEYS:
        assert labels in text and action.value in text


def test_keys_other_platforms_and_non_keys():
    assert action_for_key(-1) is None  # waitKeyEx timed out
    assert action_for_key(ord("x")) is None
    assert action_for_key(ord("N")) is Action.NEXT  # Caps Lock
    assert action_for_key(ord("Q")) is Action.QUIT
    assert action_for_key(0x270000) is Action.NEXT  # Windows: Right
    assert action_for_key(63234) is Action.PREV  # macOS: Left
    # The low byte of X11 Left is 'Q': arrows must never be read as letters.
    assert action_for_key(0xFF51) is Action.PREV


def test_navigation_wraps_and_keeps_the_view_settings():
    s = ViewerState(3, overlay="heatmap", threshold=0.3, zoom=True, adaptive=True)
    s1, fx = step(s, Action.NEXT)
    assert (s1.index, fx) == (1, ())
    assert (s1.overlay, s1.threshold, s1.zoom, s1.adaptive) == ("heatmap", 0.3, True, True)
    assert step(step(s1, Action.NEXT)[0], Action.NEXT)[0].index == 0
    assert step(s, Action.PREV)[0].index == 2


def test_toggles_and_overlay_cycle():
    s = ViewerState(1)
    assert step(s, Action.TOGGLE_ADAPTIVE)[0].adaptive is True
    assert step(step(s, Action.TOGGLE_ADAPTIVE)[0], Action.TOGGLE_ADAPTIVE)[0] == s
    assert step(s, Action.TOGGLE_ZOOM)[0].zoom is True
    assert step(s, Action.TOGGLE_COMPARE)[0].compare is True
    order = []
    for _ in OVERLAYS:
        order.append(s.overlay)
        s = step(s, Action.CYCLE_OVERLAY)[0]
    assert order == ["tissue", "box", "contours", "heatmap", "none"]
    assert s.overlay == "tissue"


def test_threshold_steps_clamp_and_do_not_drift():
    s = ViewerState(1, threshold=0.5)
    for _ in range(3):
        s = step(s, Action.THRESHOLD_UP)[0]
    assert s.threshold == 0.65  # exactly, not 0.6500000000000001
    for _ in range(40):
        s = step(s, Action.THRESHOLD_UP)[0]
    assert s.threshold == THRESHOLD_MAX
    for _ in range(40):
        s = step(s, Action.THRESHOLD_DOWN)[0]
    assert s.threshold == THRESHOLD_MIN


def test_threshold_steps_return_to_an_operating_point_off_the_grid():
    """The bundle's threshold need not be a multiple of the step: up then down comes back to it exactly."""
    s = ViewerState(1, threshold=0.855683833360672)
    up = step(s, Action.THRESHOLD_UP)[0]
    assert up.threshold == pytest.approx(0.905684)
    assert step(up, Action.THRESHOLD_DOWN)[0].threshold == 0.855683833360672
    assert step(step(s, Action.THRESHOLD_DOWN)[0], Action.THRESHOLD_UP)[0] == s


def test_save_help_quit():
    s = ViewerState(2)
    assert step(s, Action.SAVE) == (s, (Effect.SAVE,))
    assert step(s, Action.HELP) == (s, (Effect.HELP,))
    q, fx = step(s, Action.QUIT)
    assert q.quit and fx == ()
    assert step(s, None) == (s, ())


def test_state_is_immutable_and_validated():
    s = ViewerState(2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.index = 1
    with pytest.raises(ValueError):
        ViewerState(0)
    with pytest.raises(ValueError):
        ViewerState(2, index=2)
    with pytest.raises(ValueError):
        ViewerState(2, overlay="sparkles")


def test_wanted_lists_shown_results_first_then_the_prefetch():
    s = ViewerState(5, index=4, adaptive=True)
    assert shown(s) == [(4, True)]
    assert wanted(s) == [(4, True), (0, True)]  # next wraps to the first image
    c = dataclasses.replace(s, compare=True)
    assert shown(c) == [(4, False), (4, True)]  # conventional left, adaptive right
    assert wanted(c) == [(4, False), (4, True), (0, False), (0, True)]
    assert wanted(ViewerState(1)) == [(0, False)]  # one image: no duplicate prefetch


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 7), actions=st.lists(st.sampled_from(list(Action)), max_size=60))
def test_any_key_sequence_keeps_the_state_valid(n, actions):
    s = ViewerState(n)
    for a in actions:
        s, _ = step(s, a)
        assert 0 <= s.index < n
        assert THRESHOLD_MIN <= s.threshold <= THRESHOLD_MAX and round(s.threshold, 2) == s.threshold
        assert s.overlay in OVERLAYS
        assert wanted(s)[: len(shown(s))] == shown(s)
    assert s.quit == (Action.QUIT in actions)
    # n times NEXT comes back to the same image.
    back = s
    for _ in range(n):
        back = step(back, Action.NEXT)[0]
    assert back == s


# --- The background cache that computes what `wanted` lists (runtime/viewer/cache.py) ---

import threading  # noqa: E402
import time  # noqa: E402

from runtime.viewer.cache import ResultCache  # noqa: E402


def test_cache_computes_most_wanted_first_one_at_a_time_and_keeps_errors():
    active, peak, order = [0], [0], []
    lock = threading.Lock()
    release = threading.Event()

    def compute(key):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            order.append(key)
        release.wait(5)
        time.sleep(0.01)
        with lock:
            active[0] -= 1
        if key == "bad":
            raise ValueError("unreadable")
        return key * 2

    with ResultCache(compute, capacity=8) as cache:
        cache.want(["a"])
        time.sleep(0.05)  # the worker is now busy with "a"
        assert cache.busy() == "a" and cache.get("a") is None  # get never blocks
        # While "a" runs, the wish list changes from two threads; "b" is dropped again.
        threads = [threading.Thread(target=cache.want, args=(w,)) for w in (["a", "b"], ["a", "bad", "c"])]
        [t.start() for t in threads]
        [t.join() for t in threads]
        cache.want(["a", "bad", "c"])
        release.set()
        assert cache.wait("c", 5).value == "cc"
        assert cache.get("a").value == "aa"
        bad = cache.get("bad")
        assert bad.value is None and isinstance(bad.error, ValueError)
        assert peak[0] == 1, "never two computations at once"
        assert order == ["a", "bad", "c"]
        assert cache.get("b") is None
        computed = cache.computed
        cache.want(["a", "c"])  # cached: nothing recomputed
        time.sleep(0.05)
        assert cache.computed == computed


def test_cache_drops_least_recently_used_but_never_what_is_wanted():
    with ResultCache(lambda k: k, capacity=2) as cache:
        for k in (1, 2, 3):
            cache.want([k])
            assert cache.wait(k, 5).value == k
        assert cache.get(1) is None and cache.get(2).value == 2 and cache.get(3).value == 3
        cache.want([2, 4])  # 3 is the least recently used, not wanted
        assert cache.wait(4, 5).value == 4
        assert cache.get(3) is None and cache.get(2).value == 2
    with pytest.raises(ValueError):
        ResultCache(lambda k: k, capacity=0)
