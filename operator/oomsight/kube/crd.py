"""Names the agent, the operator and the chart agree on: CRD group and kinds, annotations, labels.

The CRD YAML in ``crds/`` is the source of truth for the schemas (``tests/kube/test_crds.py`` checks
these constants against it); this module only holds the strings, so that nobody types
``"oomsight.io"`` twice. Field names of the custom resources, for the writers and readers:

``MemoryPolicy`` (namespaced, ``mp``)
    ``spec``: ``selector`` (LabelSelector), ``warningThresholdPercent`` (default 90),
    ``recommendation`` {``percentile``, ``headroomPercent``, ``minimum``, ``maximum`` (quantities),
    ``halfLife``, ``historyWindow`` (Go durations: ``24h``), ``oomBumpRatio``, ``oomMinBump``
    (quantity)}, ``actions`` {``annotatePods`` (default false), ``emitEvents`` (default true),
    ``apply`` (Off|InPlace|Recreate, default Off), ``minConfidence`` (default 0.5), ``maxChangePercent``
    (default 50), ``allowRestarts`` (default false)}.
    ``status`` (operator): ``observedGeneration``, ``podsObserved``, ``atRisk``, ``oomKills24h``,
    ``mode`` (``agents`` | ``kubelet-only``), ``lastUpdateTime``, ``workloadsOmitted``,
    ``workloads[]`` (≤200) {``kind``, ``name``, ``replicas``, ``containers[]`` (≤16) {``name``,
    ``currentRequest``, ``currentLimit``, ``workingSet`` {``p50``, ``p95``, ``max``}, ``oomKills``,
    ``lastOOM``, ``recommendedRequest``, ``recommendedLimit``, ``reason``, ``confidence``, ``history``
    {``peaks`` (≤32) [[interval start, working set, demand]] (bytes: the operator's memory across restarts)},
    ``applied`` {``request``, ``limit``, ``previousRequest``, ``previousLimit``, ``time``, ``how``,
    ``reason``}, ``rolledBack`` {``time``, ``request``, ``limit``, ``fromLimit``, ``oomTime``,
    ``holdUntil``}, ``resize`` {``state`` (Infeasible|Deferred), ``message``, ``since``}, ``applyNote``}}
    (quantities as strings such as ``"512Mi"``), ``conditions[]`` (metav1.Condition).

``NodeMemoryReport`` (cluster-scoped, ``nmr``, named after the node)
    ``spec``: ``nodeName`` (= ``metadata.name``, immutable). ``status`` (agent): ``reportTime``,
    ``agentVersion``, ``bootID``, ``kernelLog`` {``source`` (kmsg|syslog|none), ``refused``},
    ``node`` {``kernel``, ``cgroupVersion`` (v1|v2|hybrid),
    ``memoryController`` (v1|v2), ``cgroupDriver``, ``kmemAccounting`` (enabled|disabled|unknown),
    ``memTotal``, ``memoryCgroups`` {``counted``, ``live``}, ``swap`` {``total``, ``used``}, ``thp``},
    ``risk`` (none|warning|critical), ``findings[]`` (≤16, ``Finding.as_dict()``), ``oomKills24h``,
    ``containersObserved``, ``containers[]`` (≤250) {``namespace``, ``pod``, ``podUID``,
    ``container``, ``containerID``, ``request``, ``limit``, ``limitLevel``
    (container|pod|ancestor|node), ``workingSet``, ``peaks[]`` (≤8) {``t`` (Unix s), ``bytes``},
    ``breakdown`` {``anon``, ``activeFile``, ``inactiveFile``, ``shmem``, ``kernel``, ``swap``},
    ``oomKills``, ``xmx``,
    ``maxRAMPercentage``}, ``incidents[]`` (≤20) {``time``, ``namespace``, ``pod``, ``podUID``,
    ``container``, ``scope`` (container|pod|ancestor|node), ``victim`` {``pid``, ``comm``, ``rss``,
    ``containerSurvived``}, ``limit``, ``dominant`` (anon|file|shmem|kernel), ``explanation``, ``bootID``,
    ``seq``}. All sizes are bytes.
    Create the object with ``spec`` only, then write ``status`` through the status subresource.
"""

from __future__ import annotations

GROUP = "oomsight.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

MEMORY_POLICY_KIND = "MemoryPolicy"
MEMORY_POLICY_PLURAL = "memorypolicies"
MEMORY_POLICY_SHORT = "mp"

NODE_REPORT_KIND = "NodeMemoryReport"
NODE_REPORT_PLURAL = "nodememoryreports"
NODE_REPORT_SHORT = "nmr"

CATEGORY = "oomsight"
"""``kubectl get oomsight`` lists both kinds."""

# Bounds in the CRD schemas; writers cap their lists to these (the API server rejects longer ones).
MAX_REPORT_CONTAINERS = 250
MAX_REPORT_PEAKS = 8
MAX_REPORT_FINDINGS = 16
MAX_REPORT_INCIDENTS = 20
MAX_POLICY_WORKLOADS = 200
MAX_POLICY_CONTAINERS_PER_WORKLOAD = 16
MAX_REPORT_BYTES = 256 * 1024
"""The budget for one NodeMemoryReport as JSON (etcd allows 1.5 MiB; we stay far below)."""

# Pod annotations the operator writes when a policy's actions.annotatePods is true.
ANNOTATION_RECOMMENDATION = "oomsight.io/memory-recommendation"
ANNOTATION_LAST_OOM = "oomsight.io/last-oom"
ANNOTATION_WARNING_THRESHOLD = "oomsight.io/warning-threshold"
"""The selecting policy's ``warningThresholdPercent`` (``"75"``), written on every selected pod whatever
``annotatePods`` says; the agent reads it from its pod watch for the HighWorkingSet warning."""

# Node labels the operator (never the agent) sets from NodeMemoryReports.
LABEL_KMEM_ACCOUNTING = "oomsight.io/kmem-accounting"
LABEL_CGROUP_VERSION = "oomsight.io/cgroup-version"

NODE_CONDITION_TYPE = "OomsightMemoryRisk"
"""Node condition the operator sets while a node's report has a warning or critical finding."""

# reportingController of the operator's Events (the agent's: core.events.REPORTING_CONTROLLER).
OPERATOR_CONTROLLER = "oomsight.io/operator"

# kopf peering (HA): the chart creates a ClusterKopfPeering with this default name.
PEERING_GROUP = "kopf.dev"
PEERING_VERSION = "v1"
CLUSTER_PEERING_PLURAL = "clusterkopfpeerings"
PEERING_PLURAL = "kopfpeerings"
DEFAULT_PEERING_NAME = "oomsight"

CRD_FILES = (
    "memorypolicies.oomsight.io.yaml",
    "nodememoryreports.oomsight.io.yaml",
    "kopfpeerings.kopf.dev.yaml",
    "clusterkopfpeerings.kopf.dev.yaml",
)
"""File names under the repository's ``crds/`` (and the chart's ``charts/oomsight/crds/``)."""
