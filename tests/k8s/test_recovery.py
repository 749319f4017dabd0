"""Workers killed under load and a rolling upgrade under load: nothing lost, nothing answered twice
(checked per request id by a read_committed subscriber)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.k8s.observe import Recorder
from tests.k8s.traffic import SteadyLoad, assert_exactly_once
from tests.support.cluster import Cluster, Release, pod_ready, wait_for
from tests.support.kafka_io import ResultReader

LOAD_PER_S = 4.0


def two_workers(values: dict[str, Any]) -> None:
    values["autoscaling"]["minReplicas"] = 2


def _worker_container_id(pod: dict[str, Any]) -> str:
    status = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "worker")
    return str(status["containerID"]).removeprefix("containerd://")


def _restarts(pod: dict[str, Any]) -> int:
    return int(next(c for c in pod["status"]["containerStatuses"] if c["name"] == "worker")["restartCount"])


@pytest.mark.timeout(900)
def test_workers_killed_under_load_lose_nothing_and_answer_nothing_twice(
    cluster: Cluster, make_release: Callable[..., Release], kafka_config: dict[str, Any]
) -> None:
    release = make_release(values=two_workers)
    release.install()
    wait_for("two ready workers", lambda: len(release.ready_pods()) == 2, 180)
    topics = release.values["topics"]
    reader = ResultReader(kafka_config, topics["results"])
    figures: dict[str, float] = {}
    try:
        with SteadyLoad(kafka_config, topics["requests"], LOAD_PER_S, "kill") as load:
            time.sleep(15)
            # 1. the API's way: the pod object is gone at once, its process is killed
            victim_pod = release.ready_pods()[0]
            victim, victim_uid = victim_pod["metadata"]["name"], victim_pod["metadata"]["uid"]
            killed_at = time.monotonic()
            cluster.kubectl(
                "-n",
                release.namespace,
                "delete",
                "pod",
                victim,
                "--grace-period=0",
                "--force",
                "--wait=false",
            )

            def replaced() -> bool:
                # The StatefulSet recreates the victim under its own name, so the replacement's
                # init_transactions fences the killed pod's transactional.id at once.
                ready = {p["metadata"]["name"]: p["metadata"]["uid"] for p in release.ready_pods()}
                return len(ready) == 2 and ready.get(victim, victim_uid) != victim_uid

            wait_for("a replacement worker under the victim's name", replaced, 240)
            figures["force_delete_to_two_ready_s"] = time.monotonic() - killed_at
            time.sleep(10)

            # 2. the runtime's way: SIGKILL the worker's container behind the kubelet's back
            pod = release.ready_pods()[0]
            name, before = pod["metadata"]["name"], _restarts(pod)
            killed_at = time.monotonic()
            cluster.ctr("tasks", "kill", "--signal", "SIGKILL", _worker_container_id(pod))

            def restarted() -> bool:
                fresh = cluster.get("pod", name, "-n", release.namespace)
                return _restarts(fresh) > before and pod_ready(fresh)

            wait_for("the killed container to be restarted and ready", restarted, 240)
            figures["container_kill_to_ready_s"] = time.monotonic() - killed_at
            time.sleep(10)
        ids = load.ids
        figures["requests"] = len(ids)
        assert_exactly_once(reader, ids, timeout_s=300)
    finally:
        reader.close()
    print(f"\n[k8s] kills under load: {figures}")
    _save("kills", figures)


@pytest.mark.timeout(900)
def test_helm_upgrade_to_a_new_tag_under_load_rolls_without_loss_or_duplicates(
    cluster: Cluster, make_release: Callable[..., Release], kafka_config: dict[str, Any]
) -> None:
    release = make_release(values=two_workers)
    release.install()
    wait_for("two ready workers", lambda: len(release.ready_pods()) == 2, 180)
    old_image = f"{release.values['image']['repository']}:{release.values['image']['tag']}"
    new_tag = "0.1.1-cpu"
    new_image = f"{release.values['image']['repository']}:{new_tag}"
    # a new tag of the same build, as a registry would serve a re-tagged release
    if new_image not in cluster.ctr("images", "ls", "-q").split():
        cluster.ctr("images", "tag", old_image, new_image)
    topics = release.values["topics"]
    reader = ResultReader(kafka_config, topics["results"])
    try:
        with (
            SteadyLoad(kafka_config, topics["requests"], LOAD_PER_S, "upgrade") as load,
            Recorder(cluster, release, kafka_config, interval_s=1.0) as recorder,
        ):
            time.sleep(10)
            values = {**release.values, "image": {**release.values["image"], "tag": new_tag}}
            started = time.monotonic()
            release.upgrade(values)
            rollout_s = time.monotonic() - started

            def rolled() -> bool:
                pods = release.pods()
                return len(pods) == 2 and all(
                    pod_ready(p) and p["spec"]["containers"][0]["image"] == new_image for p in pods
                )

            wait_for("every worker on the new tag", rolled, 300)
            time.sleep(10)
        ids = load.ids
        assert_exactly_once(reader, ids, timeout_s=300)
    finally:
        reader.close()
    during = [s for s in recorder.samples if s.t_s >= 10]
    # a StatefulSet rolls one pod at a time without surge: one of two may be down, never both,
    # and never a third pod (the replacement starts only once its predecessor is gone)
    assert min(s.ready_pods for s in during) >= 1, recorder.table()
    assert max(s.pods for s in during) <= 2, recorder.table()
    assert release.statefulset()["spec"]["replicas"] == 2, "the upgrade reset the autoscaled replica count"
    pdb = cluster.get("pdb", release.fullname, "-n", release.namespace)
    assert pdb["status"]["currentHealthy"] >= 2
    figures = {"rollout_s": rollout_s, "requests": len(ids), "min_ready": min(s.ready_pods for s in during)}
    print(f"\n{recorder.table()}\n[k8s] helm upgrade under load: {figures}")
    recorder.save("upgrade", figures)


def _save(name: str, figures: dict[str, Any]) -> None:
    import json

    from tests.k8s.observe import REPORTS

    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / f"{name}.json").write_text(json.dumps(figures, indent=1))
