"""The book's kernel talks over CurveZMQ-encrypted sockets, and the kernel's real warnings still show.

Kernels are started as ``make book`` starts them: nbclient's ``NotebookClient`` with the ``python3``
kernelspec that ``make`` installs in the virtual environment, found through ``JUPYTER_PATH`` as the
Makefile exports it. The kernelspec names tools/kernel_provisioner's provisioner, which launches the
kernel with CurveZMQ keys; without them ipykernel warns ``Kernel is running over TCP without
encryption`` on every start (issue 14).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from queue import Empty

import nbformat
import pytest
import zmq
from jupyter_client import AsyncKernelManager, BlockingKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
VENV_JUPYTER = ROOT / ".venv" / "share" / "jupyter"
TCP_WARNING = "without encryption"
CELLS = ["import warnings\nwarnings.warn('a real warning from a chapter')", "6 * 7"]


@pytest.fixture
def book_jupyter_path(monkeypatch):
    """``JUPYTER_PATH`` as the Makefile exports it (the venv's kernelspecs come first)."""
    if not (VENV_JUPYTER / "kernels" / "python3" / "kernel.json").exists():
        pytest.fail("no kernelspec in .venv/share/jupyter: run `make setup` (or `make test`) first")
    monkeypatch.setenv("JUPYTER_PATH", str(VENV_JUPYTER))


def notebook():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def run_book_kernel(tmp_path: Path):
    """Execute ``CELLS`` as the build does; return the notebook, the manager's connection info, the
    connection file the kernel read, the provisioner's class name and the kernel's whole stderr."""
    nb = notebook()
    client = NotebookClient(nb, timeout=60, kernel_name="python3")
    stderr_path = tmp_path / "kernel-stderr.txt"
    with stderr_path.open("w") as stderr, client.setup_kernel(stderr=stderr):
        info = client.km.get_connection_info()
        connection_file = json.loads(Path(client.km.connection_file).read_text())
        provisioner = type(client.km.provisioner).__name__
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
    return nb, info, connection_file, provisioner, stderr_path.read_text()


def test_the_kernelspec_make_installs_names_the_encrypting_provisioner(book_jupyter_path):
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert Path(spec.resource_dir).resolve() == (VENV_JUPYTER / "kernels" / "python3").resolve()
    assert spec.argv[0] == sys.executable  # the venv's Python, which has the provisioner installed
    assert spec.metadata["kernel_provisioner"]["provisioner_name"] == "vg-curve-provisioner"


def test_the_book_kernel_is_encrypted_and_its_real_warnings_still_reach_the_output(
    book_jupyter_path, tmp_path
):
    nb, info, connection_file, provisioner, kernel_stderr = run_book_kernel(tmp_path)

    assert provisioner == "CurveProvisioner"
    assert info["transport"] == "tcp"
    # The manager made a key pair and wrote it where the kernel reads it: the kernel binds its
    # sockets as a CurveZMQ server (ipykernel logs the TCP warning only where it has no secret key).
    assert info.get("curve_publickey") and info.get("curve_secretkey")
    assert connection_file.get("curve_secretkey") == info["curve_secretkey"]
    assert TCP_WARNING not in kernel_stderr, kernel_stderr

    # A chapter's own warning is not swallowed: it is a stderr output of its cell (which the build's
    # `stderr_output: error` turns into a build error) ...
    warned = [o for o in nb.cells[0].outputs if o.output_type == "stream" and o.name == "stderr"]
    assert warned and "UserWarning: a real warning from a chapter" in warned[0].text, nb.cells[0].outputs
    # ... and the encrypted channel carries results.
    assert nb.cells[1].outputs[0]["data"]["text/plain"] == "42"


def test_a_client_without_the_keys_gets_no_answer_from_the_book_kernel(book_jupyter_path, tmp_path):
    nb = notebook()
    client = NotebookClient(nb, timeout=60, kernel_name="python3")
    with (tmp_path / "stderr.txt").open("w") as stderr, client.setup_kernel(stderr=stderr):
        info = client.km.get_connection_info()
        plain = {k: v for k, v in info.items() if not k.startswith("curve_")}
        outsider = BlockingKernelClient()
        outsider.load_connection_info(plain)
        outsider.session.key = info["key"]
        outsider.start_channels()
        # The CurveZMQ handshake never completes, so the request either waits unsent (a DEALER
        # socket with no attached peer blocks on send: bounded here, or the test would hang) or
        # goes out and gets no reply. Either way no answer comes.
        outsider.shell_channel.socket.setsockopt(zmq.SNDTIMEO, 2000)
        try:
            try:
                outsider.kernel_info()
            except zmq.Again:
                pass  # never sent: no peer attached
            else:
                with pytest.raises(Empty):
                    outsider.get_shell_msg(timeout=2)
        finally:
            outsider.stop_channels()
        # The keyed client still works.
        client.execute_cell(nb.cells[1], 1)
    assert nb.cells[1].outputs[0]["data"]["text/plain"] == "42"


def test_a_kernel_launched_without_the_provisioner_still_warns(book_jupyter_path, tmp_path):
    """The control: the check above would pass vacuously if ipykernel stopped printing the warning."""
    spec_dir = tmp_path / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = json.loads((VENV_JUPYTER / "kernels" / "python3" / "kernel.json").read_text())
    spec["metadata"].pop("kernel_provisioner", None)
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    manager = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])

    km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=manager)
    client = NotebookClient(notebook(), timeout=60, km=km)
    stderr_path = tmp_path / "kernel-stderr.txt"
    with stderr_path.open("w") as stderr, client.setup_kernel(stderr=stderr):
        assert type(km.provisioner).__name__ == "LocalProvisioner"
        assert "curve_secretkey" not in km.get_connection_info()
        client.execute_cell(client.nb.cells[1], 1)
    assert TCP_WARNING in stderr_path.read_text()
