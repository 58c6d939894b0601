"""The Kubernetes backend through the official client against a local fake kube-apiserver, whose fake
kubelets run every pod as real local processes (tests/fixtures/k8s_*.py)."""

from __future__ import annotations

import datetime as dt
import logging
import time

import pytest

from overcast.backends.base import CapacityError, EventKind, LaunchRequest, ProviderDown
from overcast.backends.kubernetes_client import KubeUnreachable
from overcast.backends.kubernetes_manifest import ATTEMPT, JOB, JOB_ID
from overcast.placement.pool import Health
from tests.backends.k8s_cluster import Events, K8s, gpu_spec, k8s, request, wait_until  # noqa: F401

ENV_ECHO = (
    "echo job=$OVERCAST_JOB_ID attempt=$OVERCAST_ATTEMPT rank=$OVERCAST_NODE_RANK/$OVERCAST_NUM_NODES "
    "head=$OVERCAST_HEAD_ADDR gpus=$CUDA_VISIBLE_DEVICES ckpt=$OVERCAST_CHECKPOINT_DIR "
    "token=${OVERCAST_TOKEN:-none}"
)


def test_a_gang_is_one_indexed_job_and_gets_the_env_contract(
    k8s: K8s,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OVERCAST_TOKEN", "server-secret")  # the server's own credential
    backend = k8s.backend(volume_claim="shared", mount_path="/mnt/shared")
    spec = gpu_spec("env", ENV_ECHO)
    server_ckpt = "/srv/overcast-home/checkpoints/j-env"  # the loop's default: a path on the server
    req = request(backend, "j-env", 3, spec, OVERCAST_CHECKPOINT_DIR=server_ckpt, OVERCAST_TOKEN="leak")
    allocation = backend.launch(req)
    assert allocation.handle == "default/ovc-j-env-3"
    (job,) = k8s.objects("jobs")
    js = job["spec"]
    assert (js["completionMode"], js["completions"], js["parallelism"], js["backoffLimit"]) == (
        "Indexed",
        2,
        2,
        0,
    )
    assert job["metadata"]["labels"][JOB] == "j-env" and job["metadata"]["labels"][ATTEMPT] == "3"
    assert job["metadata"]["annotations"][JOB_ID] == "j-env"
    (container,) = js["template"]["spec"]["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "8"}
    assert "leak" not in str(job) and "server-secret" not in str(job)  # never overcast's credentials
    assert js["template"]["spec"]["automountServiceAccountToken"] is False
    assert server_ckpt not in str(job)  # no pod can reach the server's disk
    assert container["volumeMounts"] == [{"name": "shared", "mountPath": "/mnt/shared"}]
    (service,) = k8s.objects("services")
    assert service["spec"]["clusterIP"] == "None" and service["metadata"]["ownerReferences"][0]["uid"]
    events = Events(backend)
    started = events.wait(EventKind.STARTED, "j-env", 3).detail
    assert "node-a" in started and "own disks" not in started
    assert events.wait(EventKind.SUCCEEDED, "j-env", 3).detail == "completed"
    logs = [backend.log_path("j-env", 3, rank).read_text() for rank in (0, 1)]  # type: ignore[union-attr]
    head = "head=ovc-j-env-3-0.ovc-j-env-3.default.svc"
    ckpt = "/mnt/shared/checkpoints/j-env"  # on the volume every pod mounts
    for rank, log in enumerate(logs):
        assert f"job=j-env attempt=3 rank={rank}/2 {head} gpus=0,1,2,3,4,5,6,7 ckpt={ckpt}" in log
        assert "token=none" in log
    assert backend.active() == []
    backend.poll()  # the loop took the end: the Job goes, and its pods and Service with it
    wait_until(lambda: not k8s.objects("jobs") and not k8s.objects("pods") and not k8s.objects("services"))


def test_one_failing_rank_fails_the_gang_with_its_exit_code(k8s: K8s) -> None:  # noqa: F811
    backend = k8s.backend()
    run = 'if [ "$OVERCAST_NODE_RANK" = 1 ]; then exit 3; fi; sleep 30'
    backend.launch(request(backend, "j-bad", 1, gpu_spec("bad", run)))
    failed = Events(backend).wait(EventKind.FAILED, "j-bad")
    assert failed.exit_code == 3 and "exited 3" in failed.detail
    # backoffLimit 0: the Job controller ends the rest of the gang (rank 0 no longer sleeps)
    wait_until(lambda: all(p["status"]["phase"] != "Running" for p in k8s.objects("pods")), what="gang ended")


def test_a_gang_that_cannot_all_be_scheduled_is_deleted_and_reported_as_capacity_error(
    k8s: K8s,  # noqa: F811
) -> None:
    backend = k8s.backend(schedule_timeout_s=1.0)
    with pytest.raises(CapacityError, match="3 nodes does not fit"):
        backend.launch(request(backend, "j-big", 1, gpu_spec("big", "true", nodes=3)))
    k8s.foreign_pod("team-b", gpus=4, node="node-b")  # another team: invisible to overcast's namespace
    (pool,) = backend.pools()
    assert (pool.capacity_nodes, pool.used_nodes) == (2, 0)
    backend.launch(request(backend, "j-gang", 1, gpu_spec("gang", "sleep 30")))
    events = Events(backend)
    refused = events.wait(EventKind.CAPACITY_ERROR, "j-gang")
    assert "Insufficient nvidia.com/gpu" in refused.detail
    assert EventKind.STARTED not in events.kinds("j-gang")  # rank 0 ran, but the gang never did
    wait_until(lambda: not k8s.objects("jobs") and not k8s.objects("pods"), what="whole gang deleted")
    assert backend.active() == []


def test_a_lost_node_is_a_preemption(k8s: K8s) -> None:  # noqa: F811
    backend = k8s.backend()
    backend.launch(request(backend, "j-lost", 1, gpu_spec("lost", "sleep 30")))
    events = Events(backend)
    started = events.wait(EventKind.STARTED, "j-lost")  # no volume, no checkpoint_dir: the user is told
    assert "checkpoints on the pods' own disks" in started.detail
    k8s.cluster.lose_node("node-b")
    lost = events.wait(EventKind.PREEMPTED, "j-lost")
    assert "node-b" in lost.detail and "DeletionByPodGC" in lost.detail
    (pool,) = backend.pools()
    assert pool.capacity_nodes == 1  # the node list lowers the fleet's 2 nodes


def test_stop_sends_sigterm_and_waits_out_the_grace_period(k8s: K8s) -> None:  # noqa: F811
    backend = k8s.backend(termination_grace_s=1)  # the pods' own grace is shorter than the stop's
    real_delete_job = backend.api.delete_job

    def delete_job(name: str, grace_s: int | None = None) -> None:
        real_delete_job(name, grace_s)
        time.sleep(0.2)  # the garbage collector deletes the Job's pods before our next call

    backend.api.delete_job = delete_job  # type: ignore[method-assign]
    # several commands: the job is a grandchild of the container's PID 1, and saving takes 1.5 s
    saver = (
        "sh -c \"trap 'sleep 1.5; echo saved; exit 143' TERM; echo ready; while true; do sleep 0.05; done\";"
        " echo after"
    )
    stubborn = "trap '' TERM; echo ready; sleep 60"
    backend.launch(request(backend, "j-save", 1, gpu_spec("save", saver, nodes=1)))
    backend.launch(request(backend, "j-stub", 1, gpu_spec("stub", stubborn, nodes=1)))
    events = Events(backend)
    events.wait(EventKind.STARTED, "j-save")
    events.wait(EventKind.STARTED, "j-stub")
    pods = {p["metadata"]["labels"][JOB]: p["metadata"]["name"] for p in k8s.objects("pods")}
    log, stub = (k8s.cluster.root / "logs" / f"default_{pods[j]}.log" for j in ("j-save", "j-stub"))
    ready = lambda: "ready" in log.read_text() and "ready" in stub.read_text()  # noqa: E731
    wait_until(ready, what="the traps set")  # STARTED: the pods run, not that their traps are set
    start = time.monotonic()
    backend.stop("j-save", 1, grace_seconds=5)
    assert time.monotonic() - start < 4  # it saved (past the pods' 1 s grace) and left: no waiting
    assert "saved" in log.read_text()
    start = time.monotonic()
    backend.stop("j-stub", 1, grace_seconds=1)
    assert 0.9 < time.monotonic() - start < 6  # SIGTERM ignored: killed after the grace
    assert k8s.objects("pods") == []  # stop() returns once they are gone
    wait_until(lambda: not k8s.objects("jobs"), what="the Job removed after its pods (foreground)")
    assert all(p.popen.poll() is not None for p in k8s.cluster.procs.values())
    assert backend.poll() == [] and backend.active() == []  # a stop is not news


def test_a_stop_whose_job_delete_comes_late_runs_no_rank_again(k8s: K8s) -> None:  # noqa: F811
    # the pods are deleted first, the Job after: on a loaded machine (or a slow API) the ranks have
    # ended and gone by then, and the Job counts them (backoffLimit 0) instead of replacing them
    backend = k8s.backend()
    real_delete_job = backend.api.delete_job
    pods = lambda: {p["metadata"]["name"] for p in k8s.objects("pods")}  # noqa: E731

    def late_delete_job(name: str, grace_s: int | None = None) -> None:
        wait_until(lambda: not ranks & pods(), what="the stopped ranks gone")
        time.sleep(0.3)  # several passes of the Job controller
        real_delete_job(name, grace_s)

    backend.api.delete_job = late_delete_job  # type: ignore[method-assign]
    saver = "trap 'echo saved; exit 143' TERM; echo ready; while true; do sleep 0.05; done"
    backend.launch(request(backend, "j-late", 1, gpu_spec("late", saver)))
    Events(backend).wait(EventKind.STARTED, "j-late")
    ranks, logs = pods(), k8s.cluster.root / "logs"
    wait_until(lambda: sum("ready" in f.read_text() for f in logs.iterdir()) == 2, what="the traps set")
    backend.stop("j-late", 1, grace_seconds=5)
    wait_until(lambda: not k8s.objects("jobs") and not k8s.objects("pods"), what="Job and pods deleted")
    logs = sorted((k8s.cluster.root / "logs").iterdir())
    assert len(logs) == 2 and all("saved" in f.read_text() for f in logs)  # each rank ran once


def test_a_restarted_backend_finds_what_runs_and_what_ended_meanwhile(k8s: K8s) -> None:  # noqa: F811
    first = k8s.backend()
    first.launch(request(first, "j-long", 1, gpu_spec("long", "sleep 1.5", nodes=1)))
    first.launch(request(first, "j-short", 2, gpu_spec("short", "true", nodes=1)))
    phases = lambda: sorted(p["status"]["phase"] for p in k8s.objects("pods"))  # noqa: E731
    wait_until(lambda: phases() == ["Running", "Succeeded"], what="j-short ended, j-long runs")
    second = k8s.backend()  # a new overcast process: nothing in memory
    assert second.active() == [("j-long", 1), ("j-short", 2)]  # j-short's end is still news
    events = Events(second)
    events.wait(EventKind.SUCCEEDED, "j-short", 2)
    events.wait(EventKind.SUCCEEDED, "j-long", 1)
    assert events.kinds("j-long") == [EventKind.STARTED, EventKind.SUCCEEDED]
    pod_logs = sorted(f.name.rsplit("-", 1)[0] for f in (k8s.cluster.root / "logs").iterdir())
    assert pod_logs == ["default_ovc-j-long-1-0", "default_ovc-j-short-2-0"]  # each pod ran once


def test_an_unreachable_api_is_provider_down(k8s: K8s) -> None:  # noqa: F811
    backend = k8s.backend()
    backend.launch(request(backend, "j-away", 1, gpu_spec("away", "sleep 30", nodes=1)))
    events = Events(backend)
    events.wait(EventKind.STARTED, "j-away")
    k8s.server.close()
    down = events.wait(EventKind.PROVIDER_DOWN, "j-away", timeout=10)
    assert "unreachable" in down.detail
    (pool,) = backend.pools()
    assert pool.health is Health.DOWN
    with pytest.raises(ProviderDown):
        backend.launch(request(backend, "j-other", 1, gpu_spec("other", "true", nodes=1)))
    with pytest.raises(ProviderDown):
        backend.active()


def test_namespaces_are_isolated_by_the_api_and_tokens_are_not_logged(
    k8s: K8s,  # noqa: F811
    tmp_path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    k8s.store.tokens = {"tok-a-secret": "team-a", "tok-b-secret": "team-b"}
    k8s.store.namespaces |= {"team-a", "team-b"}
    (tmp_path / "a").write_text("tok-a-secret\n")
    (tmp_path / "b").write_text("tok-b-secret\n")
    team_a = k8s.backend(namespace="team-a", token_file=str(tmp_path / "a"))
    team_b = k8s.backend(name="lab-b", namespace="team-b", token_file=str(tmp_path / "b"))
    (pool,) = team_a.pools()  # nodes are cluster-scoped: forbidden, so the fleet's size stands
    assert (pool.capacity_nodes, pool.health) == (2, Health.OK)
    team_b.launch(request(team_b, "j-b", 1, gpu_spec("b", "sleep 30", nodes=1)))
    assert team_a.active() == [] and team_b.active() == [("j-b", 1)]
    wrong = k8s.backend(namespace="team-b", token_file=str(tmp_path / "a"))  # a's token, b's namespace
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(CapacityError, match="403"):
            wrong.launch(request(team_a, "j-x", 1, gpu_spec("x", "true", nodes=1)))
        team_b.stop("j-b", 1, grace_seconds=0)
    assert "tok-a-secret" not in caplog.text and "tok-b-secret" not in caplog.text


def test_an_end_the_loop_could_not_handle_is_reported_again_and_the_job_kept(k8s: K8s) -> None:  # noqa: F811
    backend = k8s.backend()
    backend.launch(request(backend, "j-again", 1, gpu_spec("again", "true", nodes=1)))
    done = Events(backend).wait(EventKind.SUCCEEDED, "j-again")
    backend.redeliver()  # the loop failed while handling it
    assert done in backend.poll()  # reported again; nothing deleted yet
    assert [j["metadata"]["name"] for j in k8s.objects("jobs")] == ["ovc-j-again-1"]
    assert backend.poll() == []  # taken this time: now the Job goes
    wait_until(lambda: not k8s.objects("jobs"), what="Job deleted after the loop took its end")


def test_a_job_whose_launch_answer_was_lost_is_deleted_on_sight(k8s: K8s) -> None:  # noqa: F811
    backend = k8s.backend()
    k8s.store.lose_replies.add("create jobs")
    with pytest.raises(ProviderDown):
        backend.launch(request(backend, "j-lost-answer", 1, gpu_spec("x", "sleep 30", nodes=1)))
    assert len(k8s.objects("jobs")) == 1  # created all the same
    time.sleep(0.3)  # past down_retry_s
    assert backend.poll() == [] and backend.active() == []  # not ours to run: the loop relaunches
    wait_until(lambda: not k8s.objects("jobs") and not k8s.objects("pods"), what="orphan deleted")


def test_a_kubeconfig_context_names_the_server_and_the_user(k8s: K8s, tmp_path) -> None:  # noqa: F811
    k8s.store.tokens = {"ctx-token": None}  # a cluster admin's token
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{k8s.url}"}}}}]
users: [{{name: admin, user: {{token: ctx-token}}}}]
contexts: [{{name: lab-context, context: {{cluster: fake, user: admin, namespace: default}}}}]
current-context: lab-context
"""
    )
    backend = k8s.backend(api="lab-context", kubeconfig=str(kubeconfig))
    (pool,) = backend.pools()
    assert (pool.capacity_nodes, pool.health) == (2, Health.OK)
    backend.launch(request(backend, "j-ctx", 1, gpu_spec("ctx", "true", nodes=1)))
    Events(backend).wait(EventKind.SUCCEEDED, "j-ctx")


def test_two_backends_in_one_namespace_never_touch_each_others_jobs(k8s: K8s) -> None:  # noqa: F811
    mine, theirs = k8s.backend(), k8s.backend(name="lab-2")  # two fleet clusters, one namespace
    elsewhere = k8s.backend(scope="0123abcd")  # the same fleet entry of another overcast home
    mine.launch(request(mine, "j-mine", 1, gpu_spec("mine", "sleep 30", nodes=1)))
    Events(mine).wait(EventKind.STARTED, "j-mine")
    for other in (theirs, elsewhere):
        assert other.active() == [] and other.poll() == []  # not adopted, not deleted on sight
        other.stop("j-mine", 1, grace_seconds=0)  # the same (job, attempt): not this backend's Job
        assert other.pools()[0].used_nodes == 0
    assert [j["metadata"]["name"] for j in k8s.objects("jobs")] == ["ovc-j-mine-1"]
    assert mine.active() == [("j-mine", 1)] and mine.poll() == []
    with pytest.raises(CapacityError, match="409"):  # the name is taken: the Job stays its owner's
        theirs.launch(request(theirs, "j-mine", 1, gpu_spec("mine", "true", nodes=1)))
    assert [j["metadata"].get("deletionTimestamp") for j in k8s.objects("jobs")] == [None]
    mine.stop("j-mine", 1, grace_seconds=0)


def test_a_failed_pod_log_read_does_not_mark_the_cluster_down(k8s: K8s) -> None:  # noqa: F811
    backend = k8s.backend(down_retry_s=30.0)
    real_pod_log = backend.api.pod_log

    def pod_log(name: str, *timeout: float | None) -> str:
        if name.startswith("ovc-j-logs-1-1-"):  # rank 1's node: its kubelet does not answer
            raise KubeUnreachable("ReadTimeoutError: read timed out")
        return real_pod_log(name, *timeout)

    backend.api.pod_log = pod_log  # type: ignore[method-assign]
    backend.launch(request(backend, "j-logs", 1, gpu_spec("logs", "echo hello", nodes=2)))
    Events(backend).wait(EventKind.SUCCEEDED, "j-logs")
    assert "hello" in backend.log_path("j-logs", 1, 0).read_text()  # type: ignore[union-attr]
    assert backend.pools()[0].health is Health.OK
    backend.launch(request(backend, "j-next", 1, gpu_spec("next", "true", nodes=1)))  # no ProviderDown


def test_a_missing_namespace_or_bad_credentials_are_the_pools_problem_not_the_jobs(
    k8s: K8s,  # noqa: F811
    tmp_path,
) -> None:
    nowhere = k8s.backend(namespace="trainng")  # a typo, or a namespace deleted since
    assert nowhere.active() == []  # listing in a missing namespace is an empty list, as in Kubernetes
    with pytest.raises(ProviderDown, match='404: namespaces "trainng" not found'):
        nowhere.launch(request(nowhere, "j-ns", 1, gpu_spec("ns", "true", nodes=1)))
    k8s.store.tokens = {"good": None}
    (tmp_path / "old").write_text("expired\n")
    stale = k8s.backend(token_file=str(tmp_path / "old"))
    with pytest.raises(ProviderDown, match="401"):
        stale.launch(request(nowhere, "j-401", 1, gpu_spec("x", "true", nodes=1)))
    k8s.store.tokens = None
    (pool,) = k8s.backend().pools()
    no_gang = LaunchRequest("j-bad", 1, pool, 0, gpu_spec("x", "true", nodes=1), {})
    with pytest.raises(ValueError, match="422"):  # an object the API cannot accept: the job's own fault
        k8s.backend().launch(no_gang)


def test_image_pulls_count_against_the_start_timeout_not_the_schedule_timeout(k8s: K8s) -> None:  # noqa: F811
    k8s.cluster.pull_seconds = 1.0  # every pod: bound at once, then 1 s of ContainerCreating
    patient = k8s.backend(schedule_timeout_s=0.3, start_timeout_s=10.0)
    hasty = k8s.backend(name="lab-2", schedule_timeout_s=0.3, start_timeout_s=0.3)
    patient.launch(request(patient, "j-pull", 1, gpu_spec("pull", "true", nodes=1)))
    hasty.launch(request(hasty, "j-hasty", 1, gpu_spec("hasty", "true", nodes=1)))
    refused = Events(hasty).wait(EventKind.CAPACITY_ERROR, "j-hasty")
    assert "gang not running" in refused.detail and "ContainerCreating" in refused.detail
    events = Events(patient)
    events.wait(EventKind.SUCCEEDED, "j-pull")
    assert EventKind.CAPACITY_ERROR not in events.kinds("j-pull")


def test_a_gang_stopped_while_the_api_was_away_gets_the_stops_grace_when_seen_again(k8s: K8s) -> None:  # noqa: F811
    backend = k8s.backend(down_retry_s=0.1)
    stubborn = gpu_spec("away", "trap '' TERM; echo ready; sleep 30", nodes=1)
    backend.launch(request(backend, "j-away", 1, stubborn))
    Events(backend).wait(EventKind.STARTED, "j-away")
    logs = k8s.cluster.root / "logs"  # the pod runs: wait until its trap is set too
    wait_until(lambda: any("ready" in f.read_text() for f in logs.iterdir()), what="the trap set")
    real_list_pods = backend.api.list_pods

    def unreachable(selector: str) -> list:
        raise KubeUnreachable("connection refused")

    backend.api.list_pods = unreachable  # type: ignore[method-assign]
    backend.stop("j-away", 1, grace_seconds=7)  # returns at once: deleted when seen again
    backend.api.list_pods = real_list_pods  # type: ignore[method-assign]
    time.sleep(0.15)  # past down_retry_s
    assert backend.poll() == []
    (pod,) = k8s.objects("pods")
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 7  # the stop's, not the pods' default 30
    backend.stop("j-away", 1, grace_seconds=0)


def test_an_end_carries_when_the_pods_finished_not_when_it_was_polled(k8s: K8s) -> None:  # noqa: F811
    backend = k8s.backend()
    launched = time.time()
    backend.launch(request(backend, "j-end", 1, gpu_spec("end", "sleep 0.$((2 + 6 * OVERCAST_NODE_RANK))")))
    ended = lambda: [c for j in k8s.objects("jobs") for c in j["status"].get("conditions", [])]  # noqa: E731
    wait_until(lambda: any(c["type"] == "Complete" for c in ended()), what="the gang completed")
    time.sleep(2.5)  # nobody polls (the control loop is away)
    events = Events(backend)
    done = events.wait(EventKind.SUCCEEDED, "j-end")
    polled = time.time()
    finished = [
        cs["state"]["terminated"]["finishedAt"]
        for p in k8s.objects("pods")
        for cs in p["status"]["containerStatuses"]
    ]
    assert len(finished) == 2
    last = max(dt.datetime.fromisoformat(f.replace("Z", "+00:00")).timestamp() for f in finished)
    assert done.at == last and polled - done.at > 2.5
    assert done.at >= int(launched)  # second precision, as the API's
