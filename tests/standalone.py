"""A real Spark standalone cluster on 127.0.0.1 for the cluster tests and benchmarks: start a
master and workers, package the project as the README does, submit and stop everything."""
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pyspark

ROOT = Path(__file__).resolve().parents[1]
SPARK_HOME = Path(pyspark.__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPARK_HOME")}
    env.update(SPARK_HOME=str(SPARK_HOME), SPARK_LOCAL_IP="127.0.0.1",
               PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SPARK_NO_DAEMONIZE="1")
    return env


def wait_for(predicate, what: str, timeout: float, procs) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        for p, log in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args[2]} exited ({p.returncode}): "
                                   f"{log.read_text()[-2000:]}")
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready after {timeout} s")


def stop_all(procs) -> None:
    """SIGTERM each process group (JVMs, their executors and Python workers), then SIGKILL."""
    for p, _ in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p, _ in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    deadline = time.time() + 15
    for p, _ in procs:
        while True:  # the group outlives its leader while executors wind down
            try:
                os.killpg(p.pid, signal.SIGKILL if time.time() > deadline - 10 else 0)
            except ProcessLookupError:
                break
            if time.time() > deadline:
                raise AssertionError(f"process group {p.pid} still alive")
            time.sleep(0.3)


class Cluster(NamedTuple):
    url: str  # spark://127.0.0.1:<port>
    base: Path  # logs, and the workers' work dirs work1/ and work2/
    workers: list[subprocess.Popen]  # the two Worker JVMs (spark-class execs java)


@contextmanager
def running_cluster(base: Path, workers: int = 2, memory: str = "1g") -> Iterator[Cluster]:
    """A standalone master with ``workers`` registered 1-core workers of ``memory`` each on
    127.0.0.1 (logs and work dirs under ``base``), every process stopped on exit."""
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    port = free_port()
    url = f"spark://127.0.0.1:{port}"
    procs = []

    def start(name, *args):
        log = base / f"{name}.log"
        p = subprocess.Popen([spark_class, *args], stdout=log.open("w"),
                             stderr=subprocess.STDOUT, env=cluster_env(), cwd=base,
                             start_new_session=True)  # own process group: killed as a whole
        procs.append((p, log))
        return log

    try:
        master_log = start("master", "org.apache.spark.deploy.master.Master",
                           "--host", "127.0.0.1", "--port", str(port),
                           "--webui-port", str(free_port()))
        wait_for(lambda: "I have been elected leader" in master_log.read_text(),
                 "master", 240, procs)
        for i in range(1, workers + 1):
            (base / f"work{i}").mkdir()
            start(f"worker{i}", "org.apache.spark.deploy.worker.Worker",
                  "--host", "127.0.0.1", "--port", str(free_port()),
                  "--webui-port", str(free_port()), "--cores", "1", "--memory", memory,
                  "--work-dir", str(base / f"work{i}"), url)
        wait_for(lambda: master_log.read_text().count("Registering worker") == workers,
                 f"{workers} workers", 240, procs)
        yield Cluster(url, base, [p for p, _ in procs[1:]])
    finally:
        stop_all(procs)


def package(out: Path) -> Path:
    """The README's packaging command, run from the repository root."""
    zip_path = out / "recemb_spark.zip"
    subprocess.run([sys.executable, "-m", "zipfile", "-c", str(zip_path), "recemb_spark/"],
                   cwd=ROOT, check=True)
    with zipfile.ZipFile(zip_path) as z:  # the declared defaults travel with the code
        assert "recemb_spark/config/sections.py" in z.namelist()
    return zip_path


def run_submit(cmd: list[str], cwd: Path, timeout: float) -> tuple[int, str]:
    """Run a spark-submit command in its own process group: (exit code, merged output).
    The group (JVM and Python driver) is killed on a timeout, which is then raised."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=cluster_env(), cwd=cwd, start_new_session=True) as proc:
        try:
            out, _ = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return proc.returncode, out
