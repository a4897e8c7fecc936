"""Pure logic: data types, parsers, incident assembly, diagnosis rules, recommendation math.

Text in, frozen dataclasses out. Nothing here opens a file, a socket or a process
(import-linter enforces it); adapters in ``oomsight.host`` and ``oomsight.kube`` do the I/O.
"""
