"""Feast's file registry, replaced atomically.

Feast's ``FileRegistryStore`` rewrites ``registry.db`` in place on every ``apply`` and every
``materialize`` (it opens the file with truncation, then writes): a process reading the registry
meanwhile (the retrieval service's Feast client refreshing its cache, another run) can read it
empty or cut short, which parses as an empty or broken registry (``tests/ingest/test_day_commit.py``
measured about half of the reads torn under a tight rewrite loop). ``AtomicFileRegistryStore``
writes the new registry to a unique temporary file, flushes it and renames it over the old one
(``storage.files.atomic_path``): readers see the old registry or the new one. Selected in
``feature_repo/feature_store*.yaml`` (``registry.registry_store_type``).
"""

from __future__ import annotations

import uuid

from feast.infra.registry.file import FileRegistryStore
from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto
from feast.utils import _utc_now

from storage.files import atomic_path


class AtomicFileRegistryStore(FileRegistryStore):
    """``FileRegistryStore`` whose writes replace the file in one rename."""

    def _write_registry(self, registry_proto: RegistryProto) -> None:
        registry_proto.version_id = str(uuid.uuid4())
        registry_proto.last_updated.FromDatetime(_utc_now())
        with atomic_path(self._filepath) as tmp:
            tmp.write_bytes(registry_proto.SerializeToString())
