"""tf.distribute: a real two-process MultiWorkerMirroredStrategy run of fit.py
on 127.0.0.1 trains as one process does."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from distributed_checks import FIT, STEPS, TIMEOUT, environment

# Trains through the commands or for many steps: left out of the inner loop (pytest -m "not slow").
pytestmark = pytest.mark.slow


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def test_two_worker_processes_train_like_one_process(tmp_path):
    from probvae import runs
    from probvae.config import RunConfig
    from probvae.training import fit

    try:
        ports = _free_ports(2)
    except OSError as error:
        pytest.skip(f"cannot bind a port on 127.0.0.1 for the workers ({error})")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    run_dir = tmp_path / "run"
    args = ["--dataset", "shapes", "--arch", "mlp", "--latent-dim", "2", "--epochs", "1", "--max-train-examples",
            str(6 * STEPS), "--batch-size", "6", "--learning-rate", "0.01", "--seed", "5", "--strategy",
            "multi-worker", "--run-dir", str(run_dir)]
    workers = []
    try:
        for index in range(2):
            temporary = tmp_path / f"tmp-{index}"
            temporary.mkdir()
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            workers.append(subprocess.Popen([sys.executable, FIT, *args], stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True,
                                            env=environment(TF_CONFIG=tf_config, TMPDIR=str(temporary))))
        deadline = time.time() + TIMEOUT
        outputs = [worker.communicate(timeout=max(1.0, deadline - time.time())) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    for worker, (_, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
    assert "[worker 1] done; the chief writes the run to" in outputs[1][0]
    # Only the chief wrote the run directory; the other worker's temporary folder is gone.
    assert sorted(os.listdir(tmp_path)) == ["run", "tmp-0", "tmp-1"]
    assert os.listdir(tmp_path / "tmp-1") == []
    assert {"config.json", "metrics.json", "checkpoints", "logs"} <= set(os.listdir(run_dir))
    metrics = runs.read_json(str(run_dir / runs.METRICS_FILE))
    assert metrics["distribution"]["strategy"] == "multi-worker"
    assert (metrics["distribution"]["replicas"], metrics["distribution"]["workers"]) == (2, 2)

    # The same configuration in this process, on one device.
    config = RunConfig.from_dict(runs.read_json(str(run_dir / runs.CONFIG_FILE)))
    single = fit(config.replace(train={"strategy": "one-device"}), str(tmp_path / "single"), log=lambda _: None)
    train, reference = metrics["epochs"][0]["train"], single["epochs"][0]["train"]
    # 8 steps in float32, sums in another order: equal to 1e-5 relative.
    for key in ("loss", "elbo", "reconstruction", "kl", "gradient_norm", "gradient_norm_max"):
        assert train[key] == pytest.approx(reference[key], rel=1e-5), key
    assert metrics["test"]["log_likelihood"] == pytest.approx(single["test"]["log_likelihood"], rel=1e-5)
    assert metrics["test"]["checkpoint"] == single["test"]["checkpoint"]
    for key in ("elbo", "reconstruction", "kl", "n_examples"):
        assert metrics["epochs"][0]["validation"][key] == pytest.approx(single["epochs"][0]["validation"][key],
                                                                        rel=1e-5), key
        assert metrics["test"][key] == pytest.approx(single["test"][key], rel=1e-5), key

