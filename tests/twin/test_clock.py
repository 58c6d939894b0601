from overcast.twin.clock import VirtualClock


def test_events_run_in_time_order_and_ties_in_insertion_order():
    clock = VirtualClock()
    seen: list[tuple[float, str]] = []
    for when, label in [(5.0, "c"), (1.0, "a"), (5.0, "d"), (2.0, "b")]:
        clock.at(when, lambda label=label: seen.append((clock.now, label)))
    clock.run_until(4.0)
    assert seen == [(1.0, "a"), (2.0, "b")]
    assert clock.now == 4.0
    clock.run_until(10.0)
    assert [label for _, label in seen] == ["a", "b", "c", "d"]
    assert clock.events_processed == 4


def test_an_event_scheduled_in_the_past_runs_now_not_before():
    clock = VirtualClock(start=100.0)
    times: list[float] = []
    clock.at(50.0, lambda: times.append(clock.now))
    clock.after(1.0, lambda: clock.after(0.0, lambda: times.append(clock.now)))
    clock.run_until(200.0)
    assert times == [100.0, 101.0]
