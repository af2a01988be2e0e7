"""Reading a TorchScript archive (OpenAI's released ``ViT-B-32.pt``) as data, without running it.

``torch.jit.load`` compiles the archive's ``code/`` and runs it (a class's ``__setstate__``, for
one) before anything can be checked, so a crafted file can act on the machine. We never call it.
The archive is a zip:

    <name>/data.pkl       a pickle of the module tree: each module an object of a class named
                          ``__torch__.<...>``, its state a dict of parameters, buffers, submodules
                          and flags such as ``training``
    <name>/data/<key>     the raw bytes of each tensor's storage, little-endian
    <name>/code/...       the TorchScript source, which we do not read
    <name>/byteorder      "little" (absent in older archives, which are little-endian too)

In ``data.pkl`` a tensor is ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``
and its storage a persistent id ``("storage", <torch.HalfStorage>, key, location, numel)``.
:class:`ArchiveUnpickler` resolves only those names: the storage classes become dtypes, the
rebuild function is our own ``as_strided`` view, and every ``__torch__`` class becomes a
:class:`ModuleRecord` that only keeps the state it is given. Any other name (``os.system``,
``builtins.eval``, ...) is refused, so unpickling cannot call anything the file chooses.
Walking the records from the root gives the state dict, named as ``module.state_dict()`` would.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict

import torch

from .files import doubled_name

# The storage classes a tensor may name, and the dtype each holds.
STORAGE_DTYPES = {
    "HalfStorage": torch.float16,
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


# data.pkl holds only the module tree and tensor metadata: ViT-L/14's is well under a megabyte.
MAX_PICKLE_BYTES = 64 << 20


class ArchiveError(ValueError):
    """The archive holds something other than modules and tensors, or is damaged; one line."""


class ModuleRecord:
    """A TorchScript module read as data: the attributes pickled for it, nothing callable."""

    type_name = "?"  # the archive's class name, e.g. "__torch__.torch.nn.modules.linear.Linear"

    def __setstate__(self, state) -> None:
        # Modules pickle a dict of attributes; a custom TorchScript __setstate__ takes anything
        # else, which holds no named parameters and is kept only to be ignored.
        self.attributes = state if isinstance(state, dict) else {}


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, requires_grad=False, hooks=None, metadata=None):
    """Our stand-in for torch._utils._rebuild_tensor_v2: a copy of a plain dense view of the storage's elements.

    torch.as_strided trusts its arguments: a stride of 0 or overlapping strides would make one
    stored number stand for many weights, a view past the storage's end would read memory that
    is not the file's. So the view must be dense (contiguous in some order of its dimensions)
    and inside its storage, from its offset: OpenAI's archives can hold several tensors in one
    storage. The copy owns its memory, so no tensor keeps the whole archive's buffer alive.
    """
    if not isinstance(storage, torch.Tensor):
        raise ArchiveError("a tensor refers to something that is not a storage")
    if not (_is_index(offset) and isinstance(size, (tuple, list)) and isinstance(stride, (tuple, list))
            and len(size) == len(stride) and all(map(_is_index, size)) and all(map(_is_index, stride))):
        raise ArchiveError(f"a tensor has an offset, size or stride that is not whole numbers of 0 or more "
                           f"(offset {offset!r}, size {size!r}, stride {stride!r})")
    size, stride = tuple(size), tuple(stride)
    numel = 1
    for n in size:
        numel *= n
    if numel == 0:
        return torch.empty(size, dtype=storage.dtype)
    expected = 1  # the stride a dense layout needs next, going from the fastest dimension
    for n, step in sorted(((n, step) for n, step in zip(size, stride) if n > 1), key=lambda d: d[1]):
        if step != expected:
            raise ArchiveError(f"a tensor of size {size} has strides {stride}, not a plain dense view "
                               "(its elements would overlap or skip); the file may be crafted")
        expected *= n
    if offset + numel > storage.numel():
        raise ArchiveError(f"a tensor of {numel} elements at offset {offset} does not fit in its storage of "
                           f"{storage.numel()}; the file is damaged or crafted")
    return torch.as_strided(storage, size, stride, offset).clone()


def _is_index(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _restore_type_tag(value, type_tag):
    """torch.jit._pickle.restore_type_tag only annotates a container's type; the value is kept."""
    return value


class ArchiveUnpickler(pickle.Unpickler):
    """Unpickles data.pkl knowing only tensors, storages, OrderedDict and module records."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix = archive, prefix
        self.storages: dict[str, torch.Tensor] = {}  # key -> 1-D tensor of its elements
        self.record_classes: dict[str, type] = {}

    def find_class(self, module: str, name: str):
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch.jit._pickle", "restore_type_tag"):
            return _restore_type_tag
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "__torch__" or module.startswith("__torch__."):
            qualified = f"{module}.{name}"
            if qualified not in self.record_classes:  # one class per name, so records keep their type
                self.record_classes[qualified] = type(name, (ModuleRecord,), {"type_name": qualified})
            return self.record_classes[qualified]
        raise ArchiveError(f"the archive's data.pkl names {module}.{name}, which a module's weights never need; "
                           "it was not called (the file may be crafted)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise ArchiveError(f"unknown persistent id {str(pid)[:60]!r} in data.pkl")
        _, dtype, key, _location, numel = pid
        if not isinstance(key, str) or not _is_index(numel):
            raise ArchiveError(f"a storage with key {str(key)[:20]!r} and size {str(numel)[:20]!r}: not a name and a count")
        if key not in self.storages:
            self.storages[key] = self._read_storage(key, dtype, numel)
        return self.storages[key]

    def _read_storage(self, key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        name = f"{self.prefix}data/{key}"
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise ArchiveError(f"the archive lacks {name}, a tensor's data") from None
        itemsize = torch.empty((), dtype=dtype).element_size()
        # torch writes storages uncompressed; checking the declared size first means a crafted
        # entry cannot make us inflate more than the file holds.
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != numel * itemsize:
            raise ArchiveError(f"{name} holds {info.file_size} bytes (compression {info.compress_type}), "
                               f"expected {numel * itemsize} stored bytes")
        data = bytearray(self.archive.read(name))
        return torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """The state dict of the module in a TorchScript archive (a path or a binary file), read without running its code."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        twice = doubled_name(names)
        if twice is not None:
            raise ArchiveError(f"the archive holds {twice} twice; the file is damaged or crafted")
        pickles = [name for name in names if name.endswith("data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise ArchiveError(f"expected one <name>/data.pkl in the archive, found {len(pickles)}")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in names and _read_small(archive, f"{prefix}byteorder", 16).strip() != b"little":
            raise ArchiveError("the archive was written on a big-endian machine; re-save it on a little-endian one")
        unpickler = ArchiveUnpickler(io.BytesIO(_read_small(archive, pickles[0], MAX_PICKLE_BYTES)), archive, prefix)
        try:
            root = unpickler.load()
        except ArchiveError:
            raise
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as err:
            raise ArchiveError(f"data.pkl could not be read ({type(err).__name__}: {err})") from None
    if not isinstance(root, ModuleRecord):
        raise ArchiveError(f"data.pkl holds {type(root).__name__}, not a TorchScript module")
    state_dict: dict[str, torch.Tensor] = {}
    _collect(root, "", state_dict, depth=0)
    return state_dict


def _read_small(archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """An entry torch writes uncompressed and small, refused before inflating if it claims otherwise."""
    info = archive.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED or info.file_size > limit:
        raise ArchiveError(f"{name} is {'compressed' if info.compress_type != zipfile.ZIP_STORED else 'stored'}, "
                           f"{info.file_size} bytes; torch writes it uncompressed and at most {limit} bytes, "
                           "so the file is not one torch wrote")
    return archive.read(name)


def _collect(record: ModuleRecord, prefix: str, out: dict[str, torch.Tensor], depth: int) -> None:
    """Name each tensor by its path from the root, as nn.Module.state_dict() does."""
    if depth > 100:  # CLIP is 6 modules deep; a cycle or a crafted chain stops here
        raise ArchiveError("the module tree is more than 100 modules deep")
    for name, value in getattr(record, "attributes", {}).items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, ModuleRecord):
            _collect(value, f"{prefix}{name}.", out, depth + 1)
