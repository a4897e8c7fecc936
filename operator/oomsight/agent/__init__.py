"""The node agent (DaemonSet): a plain process that only reports."""
