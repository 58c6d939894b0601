from overcast.serve.autoscaler import ScaleState, autoscale, desired_replicas
from overcast.spec.models import Autoscaling

POLICY = Autoscaling(
    min_replicas=1,
    max_replicas=5,
    target_rps_per_replica=10,
    upscale_delay_seconds=5,
    downscale_delay_seconds=20,
)


def test_desired_is_clamped():
    assert desired_replicas(POLICY, 0) == 1
    assert desired_replicas(POLICY, 25) == 3
    assert desired_replicas(POLICY, 1000) == 5
    assert desired_replicas(Autoscaling(min_replicas=2), 1000) == 2  # no target rate: fixed count


def test_scale_up_waits_for_the_up_delay_and_down_for_the_down_delay():
    s = ScaleState(1)
    s = autoscale(POLICY, s, 30, now=0)
    assert s.target == 1 and s.want_up_since == 0
    s = autoscale(POLICY, s, 30, now=4)
    assert s.target == 1
    s = autoscale(POLICY, s, 30, now=5)
    assert s.target == 3
    s = autoscale(POLICY, s, 5, now=6)
    assert s.target == 3 and s.want_down_since == 6
    s = autoscale(POLICY, s, 5, now=25)
    assert s.target == 3
    s = autoscale(POLICY, s, 5, now=26)
    assert s.target == 1


def test_a_blip_resets_the_timer():
    s = autoscale(POLICY, ScaleState(1), 30, now=0)
    s = autoscale(POLICY, s, 8, now=3)  # back to within target: the wish is forgotten
    assert s.want_up_since is None
    s = autoscale(POLICY, s, 30, now=4)
    s = autoscale(POLICY, s, 30, now=8)
    assert s.target == 1
    assert autoscale(POLICY, s, 30, now=9).target == 3
