"""Files written whole: to a temporary name, flushed to the disk, then renamed over their own name.

A run killed at any moment, or a machine that loses power, leaves each file whole, old or new: the data is
fsynced before the rename, and the folder after it, so that the rename itself is on the disk too.
"""
import os


def _fsync(path, flags=os.O_RDONLY):
    """Flush what the system holds of `path` (a file, or a folder's entries) to the disk, where it can."""
    try:
        handle = os.open(path, flags)
    except OSError:
        return  # (a folder cannot be opened on every system: nothing more to do there)
    try:
        os.fsync(handle)
    except OSError:
        pass  # some file systems do not flush folders
    finally:
        os.close(handle)


def write_atomically(path, write):
    """write(temporary) into '.partial.' + the file's name beside `path` (no 'weights.*' pattern matches it),
    then rename it over `path`: a failure or a kill leaves the old file or the new one, never a partial one."""
    folder, name = os.path.split(str(path))
    os.makedirs(folder or ".", exist_ok=True)
    temporary = os.path.join(folder, ".partial." + name)
    try:
        write(temporary)
        _fsync(temporary)
        os.replace(temporary, path)
        _fsync(folder or ".")
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
