"""The dataset format, shared by every part: what the generator writes and everyone else reads.

- :mod:`.format`: layout, names, arrow schema, shard tasks and records (resume state);
- :mod:`.records`: typed manifest records (:class:`ConfigInfo`, :class:`FamilyInfo`);
- :mod:`.reader`: :class:`Dataset` (manifest + decoded splits), :class:`Split`, row iteration;
- :mod:`.card`: the Hugging Face dataset card and the sample grids;
- :mod:`.sources`: other labelled image sources (MNIST-5k, ImageFolder, torchvision) by registry;
- :mod:`.export`: other layouts (ImageFolder).
"""

from .format import FORMAT, STATE_DIR, config_name, format_value
from .reader import Dataset, Split, SplitCache, iter_rows, read_manifest
from .records import ConfigInfo, FamilyInfo
from .sources import SOURCES, SourceData, load_source

__all__ = ["FORMAT", "STATE_DIR", "ConfigInfo", "Dataset", "FamilyInfo", "SOURCES", "SourceData", "Split",
           "SplitCache", "config_name", "format_value", "iter_rows", "load_source", "read_manifest"]
