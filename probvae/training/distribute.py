"""Training on several devices and hosts with tf.distribute: strategies, the
cluster, and how a global batch is split over replicas.

Strategies (`TrainConfig.strategy`, `fit.py --strategy`):

    one-device    TensorFlow's default placement: the first GPU if any, else the CPU
    mirrored      tf.distribute.MirroredStrategy over every visible GPU (with no
                  GPU, over every logical CPU device)
    multi-worker  tf.distribute.MultiWorkerMirroredStrategy over the processes
                  TF_CONFIG names, each with its visible GPUs (or its CPU)
    auto          multi-worker if TF_CONFIG names more than one task, else mirrored
                  if more than one GPU is visible, else one-device

A global batch of B examples (`batch_size`) is split into R equal shares, one
per replica (R replicas over all workers, B a multiple of R): replica r gets
examples r*B/R .. (r+1)*B/R - 1 of every global batch. Replica r computes its
share of the global batch's loss,

    loss_r = -(1/B) sum_{n in r} log p(x_n|z_n) + (B_r/B) * kl_weight * mean_{n in r} KL_n

(the second term is the posterior layer's regularizer loss, a mean over the
replica's B_r = B/R examples, scaled by B_r/B = 1/R), so that

    sum_r loss_r = -(1/B) sum_n log p(x_n|z_n) + kl_weight * (1/B) sum_n KL_n,

the loss one device computes on the whole batch; the gradients are summed
over replicas. With free bits the batch means inside the max are taken over
the whole global batch (`global_mean`, an all-reduce that gradients pass
through). The posterior sample of example n is loc_n + scale_n eps_n, with
eps_n column n of one [d, B] standard normal draw from the step's seed
(`probvae.distributions.sample_posterior`; with one replica the very draw of
TFP's `q.sample(seed)`), so it does not depend on which replica holds the
example. Together: the same global batch gives the same
update on any number of replicas, up to the order of float additions.

Cluster: TF_CONFIG is {"cluster": {"chief": [...], "worker": ["host:port",
...]}, "task": {"type": "worker", "index": i}}. The chief is the "chief" task
if there is one, else worker 0; it alone writes the run directory. Every
other worker writes its checkpoints (TensorFlow's multi-worker checkpointing
needs every worker to take part) to a temporary folder it removes at the end.

Evaluation runs one whole held-out batch per replica (batch k on replica
k mod R) and gathers the per-example results in order, so the numbers are
those of a single device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from typing import Callable, Iterator, Optional

import tensorflow as tf

from probvae.config import STRATEGIES
from probvae.errors import UserError
from probvae.replicas import default_device

__all__ = [
    "STRATEGIES",
    "Cluster",
    "cluster_from_env",
    "cluster_of",
    "make_strategy",
    "describe",
    "worker_directory",
    "worker_log",
    "any_worker",
]

_TASK_TYPES = ("chief", "worker")


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This process's place in a training cluster.

    task_type: "chief" or "worker"; task_id: its index among them;
    num_tasks: processes that train together (chief and workers).
    """

    task_type: str = "worker"
    task_id: int = 0
    num_tasks: int = 1
    has_chief_task: bool = False

    @property
    def is_chief(self) -> bool:
        """The chief writes the run directory: the "chief" task, else worker 0."""
        if self.task_type == "chief":
            return True
        return self.task_type == "worker" and self.task_id == 0 and not self.has_chief_task

    @property
    def name(self) -> str:
        return f"{self.task_type} {self.task_id}"


def _tf_config_error(problem: str) -> UserError:
    return UserError(f"TF_CONFIG {problem}; set it to {{\"cluster\": {{\"worker\": [\"host:port\", ...]}}, "
                     "\"task\": {\"type\": \"worker\", \"index\": i}} (see docs/distributed.md) or unset it")


def cluster_from_env(environ=None) -> Cluster:
    """The cluster TF_CONFIG describes (one process when it is unset).

    Raises:
      UserError: TF_CONFIG is not JSON, names jobs other than chief and
        worker, or a task that is not in its cluster.
    """
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not text:
        return Cluster()
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as error:
        raise _tf_config_error(f"is not valid JSON ({error.msg} at character {error.pos})") from None
    if not isinstance(spec, dict):
        raise _tf_config_error("must be a JSON object")
    cluster, task = spec.get("cluster") or {}, spec.get("task") or {}
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise _tf_config_error("needs \"cluster\" and \"task\" objects")
    if not cluster:
        return Cluster()
    others = sorted(set(cluster) - set(_TASK_TYPES))
    if others:
        raise _tf_config_error(f"names job(s) {', '.join(others)}; probvae trains with chief and worker tasks only")
    if any(not isinstance(cluster[job], list) for job in cluster) or len(cluster.get("chief", [])) > 1:
        raise _tf_config_error("must list each job's addresses, with at most one chief")
    task_type, task_id = task.get("type"), task.get("index", 0)
    if (task_type not in _TASK_TYPES or not isinstance(task_id, int)
            or not 0 <= task_id < len(cluster.get(task_type, []))):
        raise _tf_config_error(f"task {task_type!r} {task_id!r} is not in its cluster "
                               f"({', '.join(f'{len(v)} {k}' for k, v in sorted(cluster.items()))})")
    return Cluster(task_type, task_id, sum(len(cluster.get(job, [])) for job in _TASK_TYPES), "chief" in cluster)


def cluster_of(strategy) -> Cluster:
    """The cluster a strategy trains in (one process unless it is multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return Cluster()
    jobs = resolver.cluster_spec().as_dict()
    tasks = sum(len(jobs.get(job, [])) for job in _TASK_TYPES)
    return Cluster(resolver.task_type, int(resolver.task_id or 0), max(tasks, 1), "chief" in jobs)


def make_strategy(name: str = "auto", cluster: Optional[Cluster] = None):
    """The tf.distribute strategy `name` says (see the module docstring).

    Call it before TensorFlow runs anything else in the process: the
    multi-worker strategy must configure the runtime first.

    Raises:
      UserError: an unknown name, TF_CONFIG describing a cluster for a
        single-process strategy, or a multi-worker strategy made too late.
    """
    if name not in STRATEGIES:
        raise UserError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    cluster = cluster_from_env() if cluster is None else cluster
    gpus = tf.config.list_physical_devices("GPU")  # does not start the runtime
    if name == "auto":
        name = "multi-worker" if cluster.num_tasks > 1 else "mirrored" if len(gpus) > 1 else "one-device"
    if cluster.num_tasks > 1 and name != "multi-worker":
        raise UserError(f"TF_CONFIG describes a cluster of {cluster.num_tasks} tasks but --strategy {name} trains in "
                        "one process; pass --strategy multi-worker (or auto), or unset TF_CONFIG")
    if name == "one-device":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU" if gpus else "CPU")]
        return tf.distribute.MirroredStrategy(devices)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as error:
        raise UserError(f"cannot start the multi-worker strategy ({str(error).splitlines()[0][:160]}); create it "
                        "before TensorFlow runs anything else in the process (fit.py does)") from None


def describe(strategy, batch_size: Optional[int] = None) -> dict:
    """What a strategy trains on, for logs and metrics.json; `summary` is one phrase."""
    devices = list(strategy.extended.worker_devices) if strategy.num_replicas_in_sync > 1 else [default_device()]
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        name = "multi-worker"
    else:
        name = "mirrored" if isinstance(strategy, tf.distribute.MirroredStrategy) else "one-device"
    replicas, workers = int(strategy.num_replicas_in_sync), cluster_of(strategy).num_tasks
    summary = devices[0] if replicas == 1 else (
        f"{replicas} replicas ({name}, {workers} worker{'s' if workers > 1 else ''}"
        + (f", global batch {batch_size})" if batch_size else ")"))
    return {"strategy": name, "replicas": replicas, "workers": workers, "devices": devices, "summary": summary}


def worker_log(log: Callable[[str], None], cluster: Cluster) -> Callable[[str], None]:
    """`log` itself on the chief; on other workers, `log` with "[worker i] " before each line."""
    if cluster.is_chief:
        return log
    return lambda message: log(f"[{cluster.name}] {message}")


@contextlib.contextmanager
def worker_directory(run_dir: str, cluster: Cluster) -> Iterator[str]:
    """Where this process writes: `run_dir` on the chief, else a temporary
    folder that is removed when the block ends (also on errors)."""
    if cluster.is_chief:
        yield run_dir
        return
    path = tempfile.mkdtemp(prefix=f"probvae-{cluster.task_type}{cluster.task_id}-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


_ANY_WORKER = {}


def any_worker(strategy, flag: bool) -> bool:
    """Whether `flag` is set on any worker (a collective: every worker must call it)."""
    if cluster_of(strategy).num_tasks == 1:
        return bool(flag)
    count = _ANY_WORKER.get(id(strategy))
    if count is None:
        @tf.function(autograph=False)
        def count(value):
            per_replica = strategy.run(lambda v: tf.identity(v), args=(value,))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        _ANY_WORKER[id(strategy)] = count
    return float(count(tf.constant(1.0 if flag else 0.0))) > 0
