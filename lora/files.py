"""Safe file I/O for everything this project writes or reads: whole files or none, and one-line errors.

Every write goes to a hidden temporary beside its target, is fsynced and renamed into place, so a reader
(or a run resumed after a kill) sees the old file or the new one, never half of one. Readers turn a missing,
truncated or mis-encoded file into one line that names the file. Adapter files, run folders and checkpoints
are written through here.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import LoRAError

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class atomic_path:
    """Yield a temporary path beside `file`; on success fsync and rename it over `file`.

    A kill leaves at most a hidden ``.NAME.*.tmp`` file (`is_temporary`), which a resumed run sweeps away.

    >>> import tempfile; folder = Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "a.txt") as tmp:
    ...     _ = Path(tmp).write_text("whole")
    >>> (folder / "a.txt").read_text(), [p.name for p in folder.iterdir()]
    ('whole', ['a.txt'])
    """

    def __init__(self, file: Path):
        self.file = Path(file)

    def __enter__(self) -> str:
        try:
            fd, self.tmp = tempfile.mkstemp(dir=self.file.parent, prefix=f".{self.file.name}.", suffix=TMP_SUFFIX)
        except OSError as err:  # no write permission, a full disk: said of the file meant, not of its temporary
            raise OSError(err.errno, err.strerror, str(self.file)) from None
        os.close(fd)
        os.chmod(self.tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; results are for the whole team
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            os.unlink(self.tmp)
            if issubclass(exc_type, OSError) and exc.filename in (None, self.tmp):  # a write names no file
                raise OSError(exc.errno, exc.strerror or str(exc), str(self.file)) from None
            if issubclass(exc_type, RuntimeError | SafetensorError) and _disk_full(exc, self.file.parent):
                # torch.save says only "basic_ios::clear" or "PytorchStreamWriter failed", safetensors raises
                # its own SafetensorError: one OSError for all, as a full disk is the machine's, not the code's
                why = str(exc).splitlines()[0] if str(exc) else exc_type.__name__
                said = "No space left on device" + ("" if "os error 28" in why else f" ({why})")
                raise OSError(errno.ENOSPC, said, str(self.file)) from None
            return False
        try:
            with open(self.tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(self.tmp, self.file)
        except OSError as err:
            os.unlink(self.tmp)
            raise OSError(err.errno, err.strerror, str(self.file)) from None
        return False


def _disk_full(err: Exception, folder: Path) -> bool:
    """Whether a writer's own error type hides a full disk (its message, or under 1 MiB left)."""
    return "os error 28" in str(err) or shutil.disk_usage(folder).free < 1 << 20


def unused_path(path: Path) -> Path:
    """`path`, or the first of NAME-2.EXT, NAME-3.EXT, ... that does not exist: a result is never overwritten.

    >>> import tempfile; folder = Path(tempfile.mkdtemp()); _ = (folder / "t.md").write_text("kept")
    >>> unused_path(folder / "t.md").name, unused_path(folder / "u.md").name
    ('t-2.md', 'u.md')
    """
    path, i = Path(path), 1
    candidate = path
    while candidate.exists():
        i += 1
        candidate = path.with_name(f"{path.stem}-{i}{path.suffix}")
    return candidate


def is_temporary(path: Path) -> bool:
    """A hidden temporary of `atomic_path` (a write that a kill interrupted)."""
    return path.name.startswith(".") and path.name.endswith(TMP_SUFFIX) and path.is_file()


def write_text(text: str, file: Path):
    with writing(Path(file)) as tmp, open(tmp, "w") as f:
        f.write(text)


def write_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str], file: Path):
    with writing(Path(file)) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt", **metadata})


# Errors that say the path cannot hold a file (a file where a folder must be, a folder where the file must be,
# no permission, a read-only file system, a name too long), as against a disk that fails or fills.
_PATH_ERRNOS = {errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG}


@contextmanager
def writing(file: Path):
    """`atomic_path` of `file` after making its folder; a path that cannot hold the file is one `LoRAError`."""
    if "\0" in str(file):  # the OS's ValueError would name neither the file nor the fix
        raise LoRAError(f"cannot write {str(file)!r}: a path cannot hold a NUL character; choose another path")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(file) as tmp:
            yield tmp
    except OSError as err:
        if err.errno not in _PATH_ERRNOS:
            raise
        raise LoRAError(f"cannot write {file}: {_why_unwritable(file, err)}; choose another path") from None


def _why_unwritable(file: Path, err: OSError) -> str:
    if err.errno == errno.ENAMETOOLONG:
        return "a name in it is longer than the file system allows"
    if file.is_dir():
        return "it is a folder"
    blocker = next((p for p in file.parents if p.exists() and not p.is_dir()), None)
    return f"{blocker} is a file, not a folder" if blocker else (err.strerror or type(err).__name__)


def read_safetensors(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, header metadata) of a safetensors file, or a `LoRAError` naming what is wrong with it."""
    file = Path(file)
    if not file.is_file():
        raise LoRAError(f"no adapter file {file}")
    try:
        with safe_open(str(file), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as err:  # safetensors raises several types for truncated or garbled files
        raise LoRAError(
            f"{file} is not a readable safetensors file ({err}); it may be truncated or corrupted"
        ) from None


def read_text(path: str | Path, error: type[Exception], hint: str = "", keep_bom: bool = False) -> str:
    """The text of a UTF-8 file (a byte-order mark is dropped unless `keep_bom`, as a reader that must match
    another program's may need), or `error` with one line naming the file: missing, a folder, not UTF-8, or
    empty. `hint` says what to do about a file that is missing.

    >>> import tempfile; f = Path(tempfile.mkdtemp()) / "p.txt"
    >>> _ = f.write_bytes(b"\\xef\\xbb\\xbfa line\\n")
    >>> read_text(f, ValueError)
    'a line\\n'
    >>> read_text(f.parent / "none.txt", ValueError)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: .../none.txt not found (no such file)
    """
    file = Path(path)
    if file.is_dir():
        raise error(f"{file} is a folder; give the file itself")
    if not file.is_file():
        raise error(f"{file} not found (no such file){'; ' + hint if hint else ''}")
    try:
        text = file.read_bytes().decode("utf-8" if keep_bom else "utf-8-sig")
    except UnicodeDecodeError as err:
        raise error(f"{file} is not valid UTF-8 ({err.reason} at byte {err.start}); re-download it") from None
    if not text.strip():
        raise error(f"{file} is empty")
    return text
