"""Only the gateway listens on --host: executors stay on loopback, where no client can skip
the gateway's token check and name any user itself (flows/crossmodal.yml, settings.EXECUTOR_HOST).

Served on 127.0.0.2, a loopback address of its own that tests may use, standing for an
exposed interface; Linux's /proc/net/tcp* says which addresses listen.
"""
import subprocess
import time
from pathlib import Path

import pytest

from crossmodal.settings import ROOT
from tests.harness import TINY_MODEL, Server, app_env, free_port, run_app

HOST = "127.0.0.2"
pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")


def listening_ports(host: str) -> set[int]:
    """Ports in LISTEN state on ``host`` (IPv4 or IPv4-mapped IPv6)."""
    a, b, c, d = (int(x) for x in host.split("."))
    v4 = f"{d:02X}{c:02X}{b:02X}{a:02X}"
    ports = set()
    for table, address in (("/proc/net/tcp", v4), ("/proc/net/tcp6", "0000000000000000FFFF0000" + v4)):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            ip, port = local.split(":")
            if state == "0A" and ip.upper() == address:
                ports.add(int(port, 16))
    return ports


def test_only_the_gateway_listens_beyond_executor_loopback(tmp_path):
    workspace = tmp_path / "workspace"
    run_app("-t", "adduser", "root", "--admin", "--workspace", str(workspace))
    before = listening_ports(HOST)
    server = Server(workspace, free_port(HOST), free_port(HOST), "--model", TINY_MODEL, "--pretrained", "none",
                    "--host", HOST, "--auth")
    # Server.start polls 127.0.0.1; here the banner alone says the Flow is up
    server.proc = subprocess.Popen(server.command, cwd=ROOT, env=app_env(), stdout=server.log.open("w"),
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while server.banner not in server.log.read_text():
            assert server.proc.poll() is None and time.time() < deadline, server.log.read_text()[-3000:]
            time.sleep(0.5)
        assert listening_ports(HOST) - before == {server.grpc_port, server.http_port}
        assert listening_ports("127.0.0.1") & {server.grpc_port, server.http_port} == set()
    finally:
        server.stop()
