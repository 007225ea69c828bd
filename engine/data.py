"""Records → model inputs under torch.distributed: the first process of every machine builds the preprocessing
cache (once per node-local disk; on shared storage the first to finish wins) while the others wait, then every
process opens it."""
from __future__ import annotations

from dataloader.records import Reader
from dataloader.sources import CacheConfig, Source, open_source_local
from models.preprocessing import PreprocessSpec
from utils.runtime import barrier, is_local_main, is_main


def open_source(reader: Reader, specs: PreprocessSpec | list[PreprocessSpec],
                cache: CacheConfig) -> tuple[Source, dict[str, str]]:
    """(source, {id: reason} of bad records) — see dataloader.sources.open_source_local."""
    if not cache.enabled:
        return open_source_local(reader, specs, cache)
    if is_local_main():
        opened = open_source_local(reader, specs, cache if is_main() else cache.quiet())
    barrier()
    if not is_local_main():
        opened = open_source_local(reader, specs, cache.quiet())
    return opened
