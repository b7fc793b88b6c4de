"""The book's kernel runs over CurveZMQ-encrypted sockets: a kernel provisioner that asks for it.

Why this exists: ipykernel (7.4) warns ``Kernel is running over TCP without encryption`` on every
start where its manager did not hand it CurveZMQ keys. jupyter_client (8.10) provisions those keys
only when ``KernelManager.transport_encryption`` is ``"auto"`` or ``"required"``, and that trait
defaults to ``"disabled"``. The managers that run the book's chapters (myst-nb/jupyter-cache and
``jupyter-execute`` through nbclient, ``benchmarks/chapter_times.py``) are built without a Jupyter
application, so no ``jupyter_*_config`` file reaches them. What does reach every manager is the
kernelspec: its ``metadata.kernel_provisioner`` stanza names the provisioner that launches the kernel
(the documented extension point, registered under the ``jupyter_client.kernel_provisioners`` entry
point group). :class:`CurveProvisioner` is jupyter_client's own ``LocalProvisioner`` launched with
a transport-encryption policy, so the keys are made, written to the connection file and handed to
the manager's clients by jupyter_client itself; nothing is patched and no output is filtered.

``make`` installs this module (``pip install -e tools/kernel_provisioner``) and points the
virtual environment's ``python3`` kernelspec at it::

    python -m vg_kernel_provisioner .venv/share/jupyter/kernels/python3
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from jupyter_client.provisioning import LocalProvisioner
from traitlets import CaselessStrEnum

NAME = "vg-curve-provisioner"


class CurveProvisioner(LocalProvisioner):  # type: ignore[misc]
    """jupyter_client's local provisioner, launching with CurveZMQ transport encryption."""

    transport_encryption = CaselessStrEnum(
        ["auto", "required"],
        default_value="required",
        config=True,
        help="The policy the kernel is launched with, where its manager's own is 'disabled' (the "
        "default): 'required' fails the start when the keys cannot be made (pyzmq without CurveZMQ).",
    )

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        manager = self.parent
        if manager is not None and "transport_encryption" not in kwargs:
            # A manager configured for encryption keeps its own policy.
            configured = str(getattr(manager, "transport_encryption", "disabled")).lower()
            kwargs["transport_encryption"] = (
                self.transport_encryption if configured == "disabled" else configured
            )
        return await super().pre_launch(**kwargs)


def use_in_kernelspec(spec_dir: Path) -> None:
    """Name this provisioner in the kernelspec at ``spec_dir`` (its ``kernel.json``), in place."""
    path = Path(spec_dir) / "kernel.json"
    spec = json.loads(path.read_text())
    spec.setdefault("metadata", {})["kernel_provisioner"] = {
        "provisioner_name": NAME,
        "config": {"transport_encryption": "required"},
    }
    path.write_text(json.dumps(spec, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python -m {__spec__.name if __spec__ else 'vg_kernel_provisioner'} KERNELSPEC_DIR")
    use_in_kernelspec(Path(sys.argv[1]))
