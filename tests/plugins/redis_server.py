"""The run's one redis-server, on a loopback port (redis_url). Without redis-server the tests that need it
fail, unless SKIP_REDIS=1 (then they are skipped)."""
import os
import shutil
import socket
import subprocess

import pytest

from tests.poll import wait_until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("SKIP_REDIS") == "1":
            pytest.skip("SKIP_REDIS=1: redis-server is not installed")
        pytest.fail("redis-server is not installed (apt-get install redis-server), or set SKIP_REDIS=1 to skip "
                    "the tests that need it", pytrace=False)
    port = _free_port()
    folder = tmp_path_factory.mktemp("redis")
    log = open(folder / "redis.log", "wb")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    probe = redis.Redis.from_url(url, socket_connect_timeout=1)

    def up():
        if proc.poll() is not None:
            raise AssertionError(f"redis-server exited: {(folder / 'redis.log').read_text()[-2000:]}")
        try:
            return probe.ping()
        except redis.ConnectionError:
            return False

    try:
        wait_until(up, timeout=15, message="redis-server to answer")
        yield url
    finally:
        probe.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
