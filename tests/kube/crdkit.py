"""Install the repository's CRDs into the test control plane, and read ``kubectl get`` tables.

Shared by tests/kube/test_crds.py, test_chart.py and test_rbac.py (and anyone who needs the kinds).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from kube.kubehelpers import REPO_ROOT, Kubectl
from oomsight.kube import crd

CRD_DIR = REPO_ROOT / "crds"
CHART = REPO_ROOT / "charts" / "oomsight"


def crd_names() -> list[str]:
    return [name.removesuffix(".yaml") for name in crd.CRD_FILES]


def apply_crds(kubectl: Kubectl, directory: Path = CRD_DIR) -> None:
    """``kubectl apply -f crds/`` (idempotent) and wait until every CRD is Established."""
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(directory))
    kubectl.run(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *(f"customresourcedefinition/{name}" for name in crd_names()),
    )


def table(output: str, headers: list[str]) -> list[dict[str, str]]:
    """Rows of a ``kubectl get`` table as {header: cell}, cut at the header's column offsets.

    Headers may hold spaces ("AT RISK", "OOMS 24H"), so splitting on whitespace would not do.
    """
    lines = [line for line in output.splitlines() if line.strip()]
    head = lines[0]
    # kubectl pads columns with at least 3 spaces; a header's own words are one space apart.
    columns = [(m.group(0), m.start()) for m in re.finditer(r"\S+(?: \S+)*", head)]
    names = [name for name, _ in columns]
    for h in headers:
        assert h in names, f"column {h!r} missing from {head!r}"
    rows = []
    for line in lines[1:]:
        cells = {}
        for i, (name, start) in enumerate(columns):
            end = columns[i + 1][1] if i + 1 < len(columns) else len(line)
            if name in headers:
                cells[name] = line[start:end].strip()
        rows.append(cells)
    return rows


def helm(
    helm_bin: Path, kubeconfig: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    home = kubeconfig.parent
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "HELM_CACHE_HOME": str(home / "helm-cache"),
        "HELM_CONFIG_HOME": str(home / "helm-config"),
        "HELM_DATA_HOME": str(home / "helm-data"),
    }
    result = subprocess.run(
        [str(helm_bin), *args], capture_output=True, text=True, env=env, timeout=180, check=False
    )
    if check:
        assert result.returncode == 0, f"helm {' '.join(args)}\n{result.stdout}\n{result.stderr}"
    return result
